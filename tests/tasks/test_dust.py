"""dust: specks and lint go, the design's details stay."""

import functools
import math

import cv2
import numpy as np
import pytest
import torch

from helpers import DEVICES, prepared_frame, sim_scene
from tasks.dust import DustParams, backdrop_specks, remove_dust, soften_haze_
from tasks.frame import Frame

# white-sweep scenes with dust on backdrop and piece, and pave/milgrain/prong details
SCENES = [(0, dict(piece="pave", metal="yellow_gold", stone="diamond")),
          (1, dict(piece="pave", metal="yellow_gold", stone="diamond")),
          (0, dict(piece="solitaire", metal="yellow_gold", stone="sapphire")),
          (0, dict(piece="earring", metal="white_gold", stone="ruby")),
          (1, dict(piece="earring", metal="white_gold", stone="ruby")),
          (0, dict(piece="band", metal="yellow_gold"))]


def _run(seed, kw):
    return _run_cached(seed, tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=None)
def _run_cached(seed, items):
    s = sim_scene(seed, background="white_sweep", **dict(items))
    out = remove_dust(prepared_frame(s, truth_piece=True), DustParams())
    return s, out.masks["defects"][0, 0].numpy() > 0.5


def _speck_hits(scene, mask):
    n, lab = cv2.connectedComponents((scene.defects == 1).astype(np.uint8))
    bg, piece = [], []
    for k in range(1, n):
        comp = lab == k
        (piece if scene.alpha[comp].max() > 0.5 else bg).append(bool(mask[comp].any()))
    return bg, piece


def test_dust_on_backdrop_found():
    # measured: 43/43 specks over these scenes
    hits = []
    for seed, kw in SCENES:
        hits += _speck_hits(*_run(seed, kw))[0]
    assert len(hits) >= 20
    assert np.mean(hits) >= 0.8, f"{sum(hits)}/{len(hits)}"


def _visible_piece_defects(scene, mask, visible=0.04):
    """Hits for specks, lint and scratches on the piece that change the image visibly."""
    from tasks.color import linear_to_srgb

    change = np.abs(linear_to_srgb(torch.from_numpy(scene.source)).numpy()
                    - linear_to_srgb(torch.from_numpy(scene.clean)).numpy()).mean(2)
    n, lab = cv2.connectedComponents(np.isin(scene.defects, (1, 2, 3)).astype(np.uint8))
    hits = []
    for k in range(1, n):
        comp = lab == k
        # the source still has the light's cast and fall-off; a defect's own change dominates the mean
        if scene.alpha[comp].mean() > 0.5 and change[comp].mean() >= visible:
            hits.append(mask[comp].mean() >= 0.5)
    return hits


def test_defects_on_piece_found():
    # DefectNet + local contrast, truth piece mask: measured 18/23 (78%, stop 72) over these scenes
    hits = []
    for seed, kw in SCENES:
        hits += _visible_piece_defects(*_run(seed, kw))
    assert len(hits) >= 10
    assert np.mean(hits) >= 0.75, f"{sum(hits)}/{len(hits)}"


def test_details_spared():
    # measured: 0.06% (earring s0), 0% elsewhere (issue 2's filter: 1.62% on pave)
    for seed, kw in SCENES:
        s, mask = _run(seed, kw)
        det = s.details > 0
        if det.sum() == 0:
            continue
        frac = (mask & det).sum() / det.sum()
        assert frac <= 0.01, f"{kw['piece']} seed {seed}: {frac:.4f} of {det.sum()} detail px in defects"


@pytest.mark.parametrize("k", [1, 4])
def test_synthetic_specks_filled_and_row_kept(k):
    """Isolated dark dots on a grey plate are removed; a row of identical dots on the piece is kept. At
    k = 4 the same picture is 4x larger and dust finds at the working size it is shrunk to (``work_size``):
    the 12 px specks are specks there, not rings of 3 px contrast, and are filled at full size."""
    img = torch.full((1, 3, 120 * k, 200 * k), 0.6)
    piece = torch.zeros((1, 1, 120 * k, 200 * k))
    piece[..., 60 * k:110 * k, 20 * k:180 * k] = 1
    at = lambda y, x, n=3: (..., slice(y * k, (y + n) * k), slice(x * k, (x + n) * k))  # noqa: E731
    for x in (30, 150):  # lone specks: one on the backdrop, one on the piece
        img[at(20, x)] = 0.05
        img[at(85, x)] = 0.05
    for x in range(60, 130, 8):  # milgrain-like row on the piece
        img[at(70, x)] = 0.05
    frame = Frame(img).with_masks(piece=piece)
    before = img.clone()
    out = remove_dust(frame, DustParams(work_size=200))
    d = out.masks["defects"][0, 0]
    assert torch.equal(frame.image, before)
    for y, x in ((20, 30), (20, 150), (85, 30), (85, 150)):
        assert float(d[at(y, x)].min()) == 1, (y, x)
    assert float(d[65 * k:78 * k, 55 * k:135 * k].max()) == 0  # the row is design
    # filled specks look like the plate again; the row is untouched
    assert float((out.image[at(20, 30)] - 0.6).abs().max()) < 0.05
    assert float((out.image[at(85, 150)] - 0.6).abs().max()) < 0.05
    assert torch.equal(out.image[..., 70 * k:73 * k, 60 * k:130 * k], before[..., 70 * k:73 * k, 60 * k:130 * k])
    assert ("found at 200x120" in out.notes[-1]) == (k > 1)


def test_on_a_frame_longer_than_the_rules_a_bead_row_is_a_crowd_in_its_own_pixels():
    """The crowd that makes a row of beads design (``neighbours`` within ``neighbourhood`` px) grows with
    a frame's long edge past ``RULES_EDGE``: at 3200 px a milgrain row 16 px apart (2 others within the
    24 px of a 1536 px frame, 6 within its 50) stays but for its two end beads (3 others each), and a lone
    speck on the piece still goes."""
    from tasks.dust import RULES_EDGE, crowd_radius

    assert crowd_radius((800, 1200), DustParams()) == 24 and crowd_radius((400, 3200), DustParams()) == 50
    img = torch.full((1, 3, 400, 3200), 0.6)
    piece = torch.zeros((1, 1, 400, 3200))
    piece[..., 200:260, 1000:1600] = 1
    for x in range(1100, 1500, 16):
        img[..., 225:228, x:x + 3] = 0.05
    img[..., 245:248, 1580:1583] = 0.05
    assert max(img.shape[-2:]) > RULES_EDGE
    out = remove_dust(Frame(img).with_masks(piece=piece), DustParams())
    d = out.masks["defects"][0, 0]
    assert float(d[220:233, 1110:1480].max()) == 0          # the row is design
    assert float(d[245:248, 1580:1583].min()) == 1          # the speck is dust
    assert torch.equal(out.image[..., 225:228, 1110:1480], img[..., 225:228, 1110:1480])


def test_a_kept_backdrops_specks_only_when_asked_and_the_fill_made_on_the_holes_box_is_the_frames():
    """``backdrop=False`` leaves the backdrop's specks alone (the piece's are still found), and the fill,
    made on the box of what is filled, gives what push-pull on the whole frame gives."""
    from tasks.dust import _filled
    from tasks.ops import fill_holes

    img = torch.full((1, 3, 120, 200), 0.6)
    piece = torch.zeros((1, 1, 120, 200))
    piece[..., 60:110, 20:180] = 1
    img[..., 20:23, 30:33] = 0.05                       # on the backdrop
    img[..., 85:88, 150:153] = 0.05                     # on the piece
    frame = Frame(img).with_masks(piece=piece)
    kept, replaced = (remove_dust(frame, DustParams(backdrop=b)).masks["defects"][0, 0] for b in (True, False))
    assert float(kept[20:23, 30:33].min()) == 1 and float(replaced[20:23, 30:33].max()) == 0
    assert float(replaced[85:88, 150:153].min()) == 1
    hole = replaced[None, None]
    torch.testing.assert_close(_filled(img, hole), fill_holes(img, hole), rtol=0, atol=1e-6)
    assert torch.equal(_filled(img, torch.zeros_like(hole)), img)


def test_clean_plate_has_no_defects():
    img = torch.full((1, 3, 64, 64), 0.7)
    assert float(backdrop_specks(img, DustParams()).max()) == 0
    out = remove_dust(Frame(img).with_masks(piece=torch.ones((1, 1, 64, 64))), DustParams())
    assert float(out.masks["defects"].max()) == 0 and torch.equal(out.image, img)


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_and_device(device):
    s = sim_scene(0, background="white_sweep", piece="band", metal="yellow_gold")
    f = prepared_frame(s, device)
    out = remove_dust(f, DustParams())
    m = out.masks["defects"]
    assert m.shape == (1, 1, *f.image.shape[2:]) and m.device == f.image.device and m.dtype == torch.bool
    assert out.image.shape == f.image.shape and out.image.device == f.image.device
    assert torch.equal(out.alpha, f.alpha)
    # only masked pixels change
    changed = (out.image != f.image).any(1, keepdim=True)
    assert not bool((changed & (m == 0)).any())


def test_sensor_dust_mask_is_reported_as_defects():
    """Sensor dust is divided out before the stages (tasks/sensor_dust); dust reports its mask with the rest."""
    img = torch.full((1, 3, 48, 48), 0.7)
    spot = torch.zeros((1, 1, 48, 48))
    spot[..., 10:20, 10:20] = 1
    out = remove_dust(Frame(img).with_masks(sensor_dust=spot), DustParams())
    assert torch.equal(out.masks["defects"], spot > 0.5) and torch.equal(out.image, img)


@pytest.mark.parametrize("where", ["middle", "corner"])
def test_haze_is_softened_on_its_box_as_on_the_whole_frame(where):
    """``soften_haze_`` works on the haze's box only: the same as the whole-frame blend, at the frame's
    edge too (where the box's edge is the frame's)."""
    from tasks.ops import dilate, gaussian_blur

    g = torch.Generator().manual_seed(7)
    image = torch.rand((1, 3, 120, 160), generator=g)
    haze = torch.zeros((1, 1, 120, 160))
    rows, cols = (slice(50, 62), slice(70, 90)) if where == "middle" else (slice(0, 9), slice(148, 160))
    haze[..., rows, cols] = 1
    soft = gaussian_blur(dilate(haze, 1), 1.0).clamp(0, 1)
    want = image * (1 - soft) + gaussian_blur(image, 2.0) * soft
    got = soften_haze_(image.clone(), haze)
    assert float((got - want).abs().max()) < 1e-6
    assert float((got - image).abs().max()) > 0.05          # it did soften
    assert torch.equal(soften_haze_(image.clone(), torch.zeros_like(haze)), image)




def test_specks_on_the_backdrop_do_not_make_a_speck_on_the_piece_design():
    """A blob on the piece with several others close by is design; on a 6000 px frame "close by" is 94 px
    (``crowd_radius``), but specks on the backdrop further than ``BOX_MARGIN`` from the piece (here inside
    a ring) are not counted: they are not the design repeating, and DefectNet is not run there. (Until
    stop 71 it was, and this speck was kept as a crowd's.)"""
    from tasks.dust import BOX_MARGIN, crowd_radius

    yy, xx = torch.meshgrid(torch.arange(600.0), torch.arange(6000.0), indexing="ij")
    r = ((yy - 300) ** 2 + (xx - 3000) ** 2).sqrt()
    piece = ((r >= 250) & (r <= 290)).float()[None, None]   # a ring, its inside the backdrop
    img = torch.full((1, 3, 600, 6000), 0.6)
    img[..., 46:49, 2999:3002] = 0.05                       # a speck 3 px into the band
    inside = ((95, 2960), (95, 3000), (95, 3040), (132, 2980), (132, 3020))
    for y, x in inside:                                     # five lone specks inside the ring, 48-88 px from it
        img[..., y - 1:y + 2, x - 1:x + 2] = 0.05
    assert crowd_radius((600, 6000), DustParams()) == 94 and max(max(abs(y - 47), abs(x - 3000)) for y, x in inside) < 94
    assert min(250 - math.hypot(y - 300, x - 3000) for y, x in inside) > BOX_MARGIN + 4
    out = remove_dust(Frame(img).with_masks(piece=piece), DustParams())
    d = out.masks["defects"][0, 0]
    assert float(d[46:49, 2999:3002].min()) == 1                  # the piece's speck goes
    for y, x in inside:                                           # and the backdrop's (the backdrop rule)
        assert float(d[y - 1:y + 2, x - 1:x + 2].min()) == 1, (y, x)
    assert float((out.image[..., 46:49, 2999:3002] - 0.6).abs().max()) < 0.05


def test_on_a_shrunk_frame_only_a_blob_on_a_smooth_surround_is_removable():
    """``_on_smooth_surround`` (a frame shrunk to ``work_size``): of two dark 3 x 3 blobs, the one on
    flat metal stays removable; the one among stripes 4 px apart (a stone's facets, a seat's edges,
    shrunk to a speck's scale) does not, unless the bound is raised past the stripes' gradient."""
    from tasks.dust import _on_smooth_surround

    y = torch.full((1, 1, 60, 120), 0.6)
    y[..., :, 60:] = torch.where(torch.arange(60, 120) % 4 < 2, 0.8, 0.4)      # stripes on the right half
    mask = torch.zeros_like(y)
    for x in (28, 88):
        y[..., 28:31, x:x + 3] = 0.1
        mask[..., 28:31, x:x + 3] = 1
    kept = _on_smooth_surround(mask, y, DustParams().smooth_surround)
    assert float(kept[..., 28:31, 28:31].min()) == 1 and float(kept[..., :, 60:].max()) == 0
    assert torch.equal(_on_smooth_surround(mask, y, 10.0), mask)


def test_only_a_frame_shrunk_to_the_work_size_asks_for_a_smooth_surround(monkeypatch):
    """The surround test is the working size's (``find_defects(..., shrunk=True)``): at full size the
    blobs found are the network's and the rules' alone, as they were measured."""
    import tasks.dust as dust

    seen = []
    real = dust._on_smooth_surround
    monkeypatch.setattr(dust, "_on_smooth_surround", lambda *a: seen.append(a[0].shape[-1]) or real(*a))
    img = torch.full((1, 3, 120, 800), 0.6)
    piece = torch.zeros((1, 1, 120, 800))
    piece[..., 30:90, 100:700] = 1
    img[..., 58:64, 400:406] = 0.05
    for params in (DustParams(), DustParams(work_size=400)):
        out = remove_dust(Frame(img).with_masks(piece=piece), params)
        assert float(out.masks["defects"][0, 0, 58:64, 400:406].min()) == 1
    assert len(seen) == 1 and seen[0] < 400          # once, on the shrunk frame's piece box
