"""cutout: alpha matte against a smooth studio sweep."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICES, SAMPLES, scene_frame, sim_scene
from tasks.color import linear_to_srgb, srgb_to_linear
from tasks.cutout import (CARRIED_NOISE, CutoutParams, _drop_clean_tints, _drop_shadows, _flat, _shadow_sigma,
                          _with_fine_wire, component_mean, cut_out, fit_backdrop, fitted_sweep, matte_onto, outline, ridge_lines)
from tasks.frame import Frame
from tasks.neutralize import NeutralizeParams, neutralize



def _cut(scene, device="cpu"):
    return cut_out(neutralize(scene_frame(scene, device), NeutralizeParams()), CutoutParams())


def _iou(scene, frame):
    a = frame.alpha[0, 0].cpu().numpy() > 0.5
    g = scene.alpha > 0.5
    return float((a & g).sum() / (a | g).sum())


@pytest.mark.parametrize("background", ["white_sweep", "grey_sweep"])
@pytest.mark.parametrize("piece", ["band", "solitaire", "earring", "pave"])
def test_iou_on_sweeps(piece, background):
    # measured at 480x320, seeds 0-2: 0.84-0.99 (case means 0.92-0.98); 0.94-0.999 at 900x600 (bench/quality.py)
    ious = [_iou(s, _cut(s)) for s in (sim_scene(seed, piece=piece, background=background) for seed in (0, 1, 2))]
    assert min(ious) >= 0.82 and np.mean(ious) >= 0.90, ious


@pytest.mark.xfail(strict=True, reason=(
    "chain IoU(alpha>0.5) at 480x320, seeds 0-2: white 0.73/0.78/0.77, grey 0.63/0.68/0.75; link wire is "
    "2-4 px, so a 1 px error on each side of it costs half the IoU: the matte's 0.5 crossing is off by "
    "about a pixel and some link gaps in the chain's shadow are filled"))
@pytest.mark.parametrize("background", ["white_sweep", "grey_sweep"])
def test_chain_iou_on_sweeps(background):
    ious = [_iou(s, _cut(s)) for s in (sim_scene(seed, piece="chain", background=background) for seed in (0, 1, 2))]
    assert min(ious) >= 0.95, ious


@pytest.mark.parametrize("seed", [0, 2])
def test_band_interior_is_background(seed):
    s = sim_scene(seed, piece="band", background="white_sweep")
    cx, cy = (int(round(v)) for v in s.meta["ring_center"])
    assert s.alpha[cy, cx] == 0, "scene premise: ring centre shows the backdrop"
    # the interior hole: the truth-background component containing the ring centre
    _, labels = cv2.connectedComponents((s.alpha == 0).astype(np.uint8))
    hole = (labels == labels[cy, cx]) & ~cv2.dilate((s.alpha > 0).astype(np.uint8), np.ones((7, 7))).astype(bool)
    border_label = labels[0, 0]
    assume_closed = labels[cy, cx] != border_label
    alpha = _cut(s).alpha[0, 0].numpy()
    assert alpha[cy, cx] < 0.5
    if assume_closed:
        # measured (interior >3 px from the metal): 0.06% (seed 0) and 0.14% (seed 2) above 0.5;
        # right at the inner edge 5.5% / 2.1% of the hole is piece (the 1-px grown rim)
        assert (alpha[hole] > 0.5).mean() < 0.02


@pytest.mark.parametrize("seed", [0])
def test_dust_on_backdrop_not_in_mask(seed):
    # measured: 0 of 75-312 dust px away from the piece ever made it into the mask (15 scenes)
    s = sim_scene(seed, piece="solitaire", background="white_sweep")
    near_piece = cv2.dilate((s.alpha > 0.5).astype(np.uint8), np.ones((15, 15))).astype(bool)
    far_dust = (s.defects == 1) & ~near_piece
    assert far_dust.sum() > 50, "scene premise: dust on the backdrop"
    alpha = _cut(s).alpha[0, 0].numpy()
    assert (alpha[far_dust] > 0.5).sum() == 0


def _disc_cut():
    h, w = 200, 300
    yy, xx = np.mgrid[:h, :w]
    sweep = 0.85 - 0.1 * ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2)
    disc = (xx - 150) ** 2 + (yy - 100) ** 2 < 40 ** 2
    img = np.where(disc, 0.2, sweep)[..., None] * np.ones(3)
    out = cut_out(Frame(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]), CutoutParams())
    return disc, out


def test_synthetic_disc_found():
    """A grey disc on a vignetted white sweep: all of it is piece, nothing beyond a 1 px rim."""
    disc, out = _disc_cut()
    a = out.alpha[0, 0].numpy() > 0.5
    assert a[disc].all()
    rim = cv2.dilate(disc.astype(np.uint8), np.ones((3, 3))).astype(bool)
    assert not (a & ~rim).any()
    assert out.flags == ()
    assert torch.equal(out.masks["piece"], out.alpha > 0.5)


def test_a_patch_of_uneven_light_is_no_piece():
    """A broad, soft darkening of the sweep (a lamp's uneven fall-off, a diffuse shadow) that no
    quadratic follows crosses the piece threshold, but nowhere does it have an edge: it is dropped,
    the disc kept."""
    h, w = 400, 600
    yy, xx = np.mgrid[:h, :w]
    sweep = 0.85 - 0.25 * np.exp(-((xx - 480) ** 2 + (yy - 90) ** 2) / (2 * 45.0 ** 2))
    disc = (xx - 250) ** 2 + (yy - 220) ** 2 < 60 ** 2
    img = np.where(disc, 0.2, sweep)[..., None] * np.ones(3)
    img = img + np.random.default_rng(0).normal(0, 0.003, img.shape)
    frame = Frame(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None])
    a = cut_out(frame, CutoutParams(network_checks=False)).alpha[0, 0].numpy() > 0.5
    assert a[disc].mean() > 0.99 and not a[90 - 30:90 + 30, 480 - 30:480 + 30].any()
    kept = cut_out(frame, CutoutParams(network_checks=False, min_edge_support=0.0)).alpha[0, 0].numpy() > 0.5
    assert kept[90 - 30:90 + 30, 480 - 30:480 + 30].any()    # without the edge test the patch would be piece


def test_a_piece_merged_with_a_soft_glow_is_kept():
    """A disc inside a soft coloured glow that reaches it (a light box's glow warmed by the piece): the
    part's outline has no edge, but the disc's edge lies inside it, so the part holds a piece and stays."""
    h, w = 400, 600
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(xx - 300, yy - 200)
    glow = np.exp(-np.maximum(r - 60, 0) ** 2 / (2 * 40.0 ** 2))[..., None]
    sweep = 0.85 - glow * np.array([0.05, 0.2, 0.35])     # warmer, not a grey shade of the sweep
    disc = r < 60
    img = np.where(disc[..., None], 0.2, sweep)
    img = img + np.random.default_rng(1).normal(0, 0.003, img.shape)
    frame = Frame(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None])
    a = cut_out(frame, CutoutParams(network_checks=False)).alpha[0, 0].numpy() > 0.5
    assert a[disc].mean() > 0.99


def test_a_hard_shadows_even_umbra_leaves_the_mask_shaded_grey_metal_stays():
    """A grey disc shaded like a curved face casts a hard shadow on a grey sweep (the disc shifted,
    the sweep darkened evenly to 0.4): the shadow's edge is as crisp as the disc's and both are a
    grey darkening of the sweep, but only the shadow is even. It leaves the mask, its crisp rim
    with it (else the rim would enclose it and it would be filled as metal); no network asked."""
    h, w = 400, 600
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 260) ** 2 + (yy - 180) ** 2 < 90 ** 2
    umbra = ((xx - 305) ** 2 + (yy - 215) ** 2 < 90 ** 2) & ~disc
    shading = 0.6 + 0.25 * np.clip((xx - 170) / 180, 0, 1)
    img = (0.6 * np.where(disc, shading, np.where(umbra, 0.4, 1.0)))[..., None] * np.ones(3)
    img = img + np.random.default_rng(0).normal(0, 0.003, img.shape)
    frame = Frame(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None])
    a = cut_out(frame, CutoutParams(network_checks=False)).alpha[0, 0].numpy() > 0.5
    assert a[disc].mean() > 0.99 and a[umbra].mean() < 0.01
    assert not (a & ~cv2.dilate(disc.astype(np.uint8), np.ones((5, 5))).astype(bool)).any()
    kept = cut_out(frame, CutoutParams(network_checks=False, umbra_spread=0.0)).alpha[0, 0].numpy() > 0.5
    assert kept[umbra].mean() > 0.99      # without the evenness test the shadow is piece
    # the same even darkening with no piece beside it casts nothing: it is a piece (flat grey metal)
    alone = (0.6 * np.where(umbra, 0.4, 1.0))[..., None] * np.ones(3)
    alone = alone + np.random.default_rng(0).normal(0, 0.003, alone.shape)
    frame = Frame(torch.from_numpy(alone.astype(np.float32)).permute(2, 0, 1)[None])
    a = cut_out(frame, CutoutParams(network_checks=False)).alpha[0, 0].numpy() > 0.5
    assert a[umbra].mean() > 0.99


def test_the_wide_worlds_hard_shadow_under_a_band_leaves_the_mask():
    """The training world's case: a white-gold band on a white sweep under a hard light (the
    simulator's wide world, 900x600). Its shadow's crescent is as crisp as the band and the network
    calls it piece; its evenness drops it. Measured: IoU 0.568 -> 0.855."""
    from models.simulator import render_scene

    s = render_scene(np.random.default_rng([31337, 56]), (900, 600), background="white_sweep", world="wide")
    frame = neutralize(scene_frame(s), NeutralizeParams())
    with_rule = _iou(s, cut_out(frame, CutoutParams()))
    without = _iou(s, cut_out(frame, CutoutParams(umbra_spread=0.0)))
    assert with_rule >= 0.8 and without <= 0.65, (with_rule, without)


def test_a_thin_umbra_is_judged_even_inside_its_penumbra():
    """The wide world's yellow-gold solitaire on a white sweep (its trust-bench image S1054, 1200x800):
    the band's hard shadow is a crisp ring some 10 px wide, and the network calls it piece. Across so thin
    an umbra its penumbra and the blur's reach into the backdrop are most of its pixels: measured over all
    of them its shade spread 0.12 of its median, 0.07 is even. Read 2 px inside its outline it is even and
    leaves the mask. Measured on the scene as rendered: IoU 0.715 -> 0.971 (0.58 -> 0.97 from its DNG)."""
    from models.simulator import render_image

    s = render_image(202, 54, (1200, 800), world="wide")
    frame = neutralize(scene_frame(s), NeutralizeParams())
    assert _iou(s, cut_out(frame, CutoutParams())) >= 0.9


def test_a_chains_hard_shadow_found_by_its_ridges_leaves_the_mask(monkeypatch):
    """The wide world's white-gold chain on beige paper under a hard key light (its trust-bench image
    C1002, 1200x800): the chain's shadow, a grey copy of it 73 px below, is found by the ridges as
    wire and was kept as 56 stray parts. Those lines are grey, unlit and background to the network, and
    lie where the chain moved by one offset falls; they leave. Measured on the scene as rendered: IoU
    0.542 -> 0.565, stray parts 56 -> 0."""
    import tasks.cutout as cutout
    from models.simulator import render_image

    s = render_image(202, 2, (1200, 800), world="wide")
    frame = neutralize(scene_frame(s), NeutralizeParams())
    near = cv2.dilate((s.alpha > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

    def stray_px(out):
        a = out.alpha[0, 0].cpu().numpy() > 0.5
        n, labels = cv2.connectedComponents(a.astype(np.uint8))
        touching = np.bincount(labels[near & a], minlength=n) > 0
        return int((~touching[labels] & a).sum())

    assert stray_px(cut_out(frame, CutoutParams())) == 0
    monkeypatch.setattr(cutout, "_shadow_lines", lambda lines, *_: np.zeros_like(lines))
    assert stray_px(cut_out(frame, CutoutParams())) > 200


def test_the_cast_offset_is_where_the_piece_falls_not_along_its_own_wire():
    """``_cast_offset`` finds the offset that lays the core on its shadow's lines; a wire beyond the core
    beside it (a chain's own links the per-pixel tests missed) gives none."""
    from tasks.cutout import _cast_offset

    core = np.zeros((400, 600), np.uint8)
    cv2.ellipse(core, (300, 180), (200, 120), 0, 20, 160, 1, 3)
    shadow = np.zeros_like(core, bool)
    shadow[40:, 25:] = core[:-40, :-25] > 0
    shadow &= cv2.dilate(core, np.ones((5, 5), np.uint8)) == 0
    dy, dx = _cast_offset(core, shadow)
    assert abs(dy - 40) <= 2 and abs(dx - 25) <= 2, (dy, dx)
    beside = (cv2.dilate(core, np.ones((9, 9), np.uint8)) > 0) & (cv2.dilate(core, np.ones((5, 5), np.uint8)) == 0)
    assert _cast_offset(core, beside) is None


def test_synthetic_disc_tight():
    disc, out = _disc_cut()
    a = out.alpha[0, 0].numpy() > 0.5
    assert (a & disc).sum() / (a | disc).sum() >= 0.97


def test_fit_backdrop_recovers_quadratic():
    h, w = 48, 64
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    surf = (0.8 + 0.05 * x - 0.03 * y + 0.02 * x * y - 0.04 * x * x).expand(1, 3, h, w).contiguous()
    blob = surf.clone()
    blob[..., 15:30, 20:40] = 0.1
    back, use = fit_backdrop(blob)
    assert float((back - surf).abs().max()) < 1e-3
    assert float(use[..., 15:30, 20:40].max()) == 0


def _vignetted_sweep(h: int = 320, w: int = 480) -> tuple[torch.Tensor, torch.Tensor]:
    """A brown disc on a sweep with a strong lens vignette (cos^4-like, ~1.5 stops in the corners) and a
    fall-off down the sweep, in camera noise: (linear image, the disc's mask)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    light = 0.8 * (1 + 0.7 * (x * x + (y * h / w) ** 2)) ** -2 * (1 - 0.15 * y)
    image = light.expand(1, 3, h, w).clone()
    disc = (x - 0.1) ** 2 + (y * h / w) ** 2 < 0.3 ** 2
    image[:, :, disc] = torch.tensor([0.35, 0.25, 0.1])[:, None]
    image += 0.003 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    return image.clamp(0, 1), disc


def test_a_vignetted_sweep_is_fitted_a_degree_higher_not_called_cluttered():
    # measured: the quadratic's error 0.012 (over the 0.01 that sends a frame to the network, which sees no
    # plain disc), the quartic's 0.0026; IoU 0.978 (the quartic leaves a sliver where the vignette peaks
    # under the disc)
    image, disc = _vignetted_sweep()
    enc = linear_to_srgb(image)
    quadratic = CutoutParams(backdrop_degree=2, fit_local=0)
    assert fitted_sweep(enc, quadratic)[2] > quadratic.max_backdrop_residual
    params = CutoutParams()
    _, used, error, _ = fitted_sweep(enc, params)
    assert error <= params.max_backdrop_residual
    inside = F.interpolate(disc[None, None].float(), size=used.shape[-2:], mode="area")[0, 0] > 0.99
    assert float(used[0, 0][inside].max()) == 0      # the disc is not fitted as backdrop
    cut = cut_out(Frame(image), params)
    assert any("backdrop from a smooth fit" in n for n in cut.notes), cut.notes
    a = cut.alpha[0, 0] > 0.5
    assert float((a & disc).sum() / (a | disc).sum()) >= 0.95


def test_a_softbox_vignette_no_quartic_follows_is_still_a_sweep_but_a_desks_grain_is_not():
    # a rounded-rectangle fall-off (a softbox's, a lens hood's): the quartic misses it by 0.012 and the
    # frame went to the network, which sees no plain disc; followed locally (fit_local) the error is
    # 0.009 and the sweep path cuts the disc out. A grain a few px across is not followed.
    h, w = 320, 480
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    corner = (x.abs() ** 6 + y.abs() ** 6) ** (1 / 6)
    image = (0.8 * (1 - 0.4 * torch.sigmoid((corner - 0.8) / 0.07))).expand(1, 3, h, w).clone()
    disc = (x - 0.1) ** 2 + (y * h / w) ** 2 < 0.3 ** 2
    image[:, :, disc] = torch.tensor([0.35, 0.25, 0.1])[:, None]
    image = (image + 0.003 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    enc = linear_to_srgb(image)
    polynomial, params = CutoutParams(fit_local=0), CutoutParams()
    assert fitted_sweep(enc, polynomial)[2] > polynomial.max_backdrop_residual
    assert fitted_sweep(enc, params)[2] <= params.max_backdrop_residual
    assert any("network mask" in n for n in cut_out(Frame(image), polynomial).notes)
    cut = cut_out(Frame(image), params)
    assert any("backdrop from a smooth fit" in n for n in cut.notes), cut.notes
    a = cut.alpha[0, 0] > 0.5
    assert float((a & disc).sum() / (a | disc).sum()) >= 0.95
    grain = cv2.resize(np.random.default_rng(0).normal(0, 0.03, (80, 120)).astype(np.float32), (w, h))
    assert fitted_sweep((0.7 + torch.from_numpy(grain)).expand(1, 3, h, w), params)[2] > params.max_backdrop_residual


def test_a_sweep_the_quadratic_fits_keeps_the_quadratic():
    h, w = 96, 128
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    enc = torch.stack([0.8 + 0.05 * x - 0.1 * y * y, 0.7 + 0.03 * x * y, 0.75 - 0.02 * x * x])[None]
    enc = enc + 0.004 * torch.randn(enc.shape, generator=torch.Generator().manual_seed(1))
    params = CutoutParams(model_size=128)
    assert torch.equal(fitted_sweep(enc, params)[0], fit_backdrop(enc)[0])


def test_fit_backdrop_is_the_same_wherever_the_frame_lies_in_memory():
    # float32 least squares moved by ~3e-6 with the buffer's alignment, so a mask pixel on a
    # threshold flipped from run to run
    h, w = 256, 384
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    image = torch.stack([0.8 + 0.05 * x - 0.1 * y * y, 0.7 + 0.03 * x * y, 0.75 - 0.02 * x * x])[None]
    image = image + 0.01 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    fits = []
    for offset in range(8):
        buffer = torch.empty(image.numel() + 8)
        placed = buffer[offset:offset + image.numel()].view(image.shape)
        placed.copy_(image)
        fits.append(fit_backdrop(placed)[0])
    assert all(torch.equal(fit, fits[0]) for fit in fits)


def test_no_beige_fringe_on_white():
    """A grey piece shot on beige paper: composited on white, its anti-aliased rim must not stay beige."""
    from tasks.background import BackgroundParams, replace_background
    from tasks.color import rgb_to_lab

    h, w, r = 160, 240, 45
    yy, xx = np.mgrid[:h, :w]
    # 4x4 supersampled coverage gives a true fractional edge
    sub = np.stack([((xx + (i + 0.5) / 4 - 120) ** 2 + (yy + (j + 0.5) / 4 - 80) ** 2 < r * r)
                    for i in range(4) for j in range(4)]).mean(0)
    beige = np.array([0.80, 0.62, 0.42])
    grey = np.array([0.30, 0.30, 0.30])
    img = sub[..., None] * grey + (1 - sub[..., None]) * beige
    frame = Frame(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None])
    out = replace_background(cut_out(frame, CutoutParams()), BackgroundParams(mode="white"))
    rim = (sub > 0.05) & (sub < 0.95)
    lab = rgb_to_lab(out.image)[0].numpy()
    naive = rgb_to_lab(torch.from_numpy((sub[..., None] * img + (1 - sub[..., None])).astype(np.float32))
                       .permute(2, 0, 1)[None])[0].numpy()
    fringe, ours = np.abs(naive[2][rim]).mean(), np.abs(lab[2][rim]).mean()
    assert fringe > 2, "premise: plain alpha compositing keeps a beige fringe"
    assert ours < fringe / 4 and np.abs(lab[1][rim]).mean() < 0.5, (ours, fringe)


def test_chain_link_gaps_stay_background():
    from bench.quality import hole_recall

    recalls = []
    for seed in range(5):
        s = sim_scene(seed, size=(900, 600), piece="chain", background="white_sweep")
        recalls.append(hole_recall(_cut(s).alpha[0, 0].numpy() > 0.5, s.alpha > 0.5))
    # measured 0.99/0.94/0.96/0.98/0.93 (0.47 for the rose-gold chain of seed 1 before ``_link_gaps``: the
    # faint-metal detector's 1.5 px average bleeds the link colour into its 2-3 px gaps)
    assert min(recalls) >= 0.9, recalls


def _link_in_core(pocket_shade: float = 0.85, wire_grey: bool = False, solid: bool = False, pave: bool = False):
    """A 1200 x 800 core holding one link closed over (its 4 x 10 px gap inside a 2 px wire), or a
    solid disc around the same gap, or a pave band whose stones are cut out as holes (a web of metal as
    thin as the wire) around it, with the per-pixel shade and grey masks ``_link_gaps`` reads."""
    core = np.zeros((800, 1200), np.uint8)
    shade = np.ones((800, 1200), np.float32)
    grey = np.zeros((800, 1200), bool)
    gap = np.zeros((800, 1200), bool)
    gap[395:405, 598:602] = True
    if solid:
        cv2.circle(core, (600, 400), 40, 1, -1)
    elif pave:
        core[340:460, 540:660] = 1
        for y in range(343, 457, 10):
            for x in range(543, 657, 10):
                core[y:y + 6, x:x + 6] = 0
        core[393:407, 596:604] = 1
    else:
        core[393:407, 596:604] = 1
    shade[core > 0] = 1.3     # lit gold: no grey darkening of the backdrop makes it
    grey[core > 0] = wire_grey
    shade[gap], grey[gap] = pocket_shade, True
    return core, shade, grey, gap


def test_a_link_gap_the_core_closed_over_opens_again_a_facet_or_a_wires_spine_does_not():
    from tasks.cutout import _link_gaps

    core, shade, grey, gap = _link_in_core()
    assert (_link_gaps(core, shade, grey) == gap).all()
    for why in ({"wire_grey": True},        # a white wire's grey edges around its pale spine
                {"pocket_shade": 0.96},     # as pale as the open backdrop: a white stone as likely
                {"pocket_shade": 0.4},      # dark metal or a facet, not the chain's light shadow
                {"solid": True},            # deep in solid metal
                {"pave": True}):            # in the web of a pave band whose stones were cut out
        assert not _link_gaps(*_link_in_core(**why)[:3]).any(), why


def _noisy_sweep(noise: float, seed: int = 0, size: tuple[int, int] = (400, 600)):
    """A flat grey sweep in sRGB with camera noise of ``noise`` (sRGB units): (enc as numpy, backdrop,
    quiet, as_t: numpy (C, H, W) -> (1, C, H, W) float32 tensor)."""
    rng = np.random.default_rng(seed)
    back = np.full((3, *size), 0.6, np.float32)
    enc = back + rng.normal(0, noise, back.shape).astype(np.float32)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]
    return enc, as_t(back), torch.ones(1, 1, *size, dtype=torch.bool), as_t


def test_ridges_find_a_faint_wire_in_noise_and_no_edge_or_noise():
    """A 3 px wire 0.12 darker than a grey sweep under noise of 0.05 per pixel (ISO 3200 here): 2.4
    sigmas a pixel, where the per-pixel test asks for 8; its ridge is found (0.08 is not: measured
    none of it). Noise alone, a shadow's crisp edge and a sweep's fall-off make no line."""
    enc, back, quiet, as_t = _noisy_sweep(0.05)
    yy, xx = np.mgrid[:400, :600]
    wire = np.abs(yy - (200 + 60 * np.sin(xx / 70))) < 1.5
    found = ridge_lines(as_t(enc - 0.12 * wire), back, quiet, CutoutParams())
    near = cv2.dilate(wire.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert found[wire].mean() > 0.6 and (found & ~near).sum() < 0.02 * wire.sum(), (found[wire].mean(), (found & ~near).sum())
    assert not ridge_lines(as_t(enc), back, quiet, CutoutParams()).any()
    edge = (xx > 300) * 0.15 + 0.1 * (yy / 400.0) ** 2        # a shadow's step and a fall-off
    assert not ridge_lines(as_t(enc - edge), back, quiet, CutoutParams()).any()


def test_ridges_of_a_large_frame_are_read_shrunk_and_grown_back():
    """Above ``ridge_size`` the ridges are found on the shrunk frame: the same wire, twice the size,
    is found as well, and the map is the frame's size."""
    enc, back, quiet, as_t = _noisy_sweep(0.03, size=(800, 1200))
    yy, xx = np.mgrid[:800, :1200]
    wire = np.abs(yy - (400 + 120 * np.sin(xx / 140))) < 3
    found = ridge_lines(as_t(enc - 0.06 * wire), back, quiet, CutoutParams(ridge_size=600))
    assert found.shape == (800, 1200) and found[wire].mean() > 0.6, found[wire].mean()
    near = cv2.dilate(wire.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (found & ~near).sum() < 0.05 * wire.sum()


def test_a_chain_in_iso_3200_noise_the_network_misses_is_found_by_its_ridges():
    """The wide world's rose-gold chain on a grey sweep at ISO 3200 (noise 0.064 in sRGB): camera noise
    alone failed the backdrop fit, and the network (at 384 px the wire is under a pixel) found no
    piece. Past the noise the sweep fits, so the backdrop model looks after all, and the chain's
    ridges find it where its pixels are 2-3 sigmas off. Measured: IoU 0 -> 0.45."""
    from bench.quality import WORLDS
    from models.simulator import render_scene

    pieces, backs = WORLDS["wide"]
    s = render_scene(np.random.default_rng([1, pieces.index("chain"), backs.index("grey_sweep")]), (900, 600),
                     piece="chain", background="grey_sweep", world="wide")
    frame = neutralize(scene_frame(s), NeutralizeParams())
    out = cut_out(frame, CutoutParams())
    assert any("the network found no piece" in n for n in out.notes), out.notes
    assert _iou(s, out) >= 0.35
    assert _iou(s, cut_out(frame, CutoutParams(ridge_sigmas=1e9))) < 0.05
    assert _iou(s, cut_out(frame, CutoutParams(fit_noise_share=0))) < 0.05     # no second look: nothing


def test_the_backdrop_fit_is_read_past_camera_noise_not_past_a_desks_grain():
    """A sweep at ISO 3200: its fit error is the noise's and falls under the clutter threshold on a 2 px
    average; a grain a few px across keeps its error (so a desk stays with the network)."""
    from tasks.cutout import _fit_error

    rng = np.random.default_rng(0)
    backdrop = torch.ones(1, 1, 256, 384)
    noise = torch.from_numpy(rng.normal(0, 0.03, (1, 3, 256, 384)).astype(np.float32))
    raw, past = _fit_error(noise, backdrop, CutoutParams())
    assert raw > 0.01 > past, (raw, past)
    grain = torch.from_numpy(cv2.resize(rng.normal(0, 0.03, (64, 96)).astype(np.float32), (384, 256)))
    raw, past = _fit_error(grain.expand(1, 3, 256, 384), backdrop, CutoutParams())
    assert past == raw > 0.01, (raw, past)


def test_cluttered_backdrop_uses_the_network():
    ious = []
    for piece in ("band", "solitaire", "earring"):
        for seed in range(3):
            s = sim_scene(seed, size=(600, 400), piece=piece, background="textured_desk")
            out = _cut(s)
            assert any("network mask" in n for n in out.notes), out.notes
            ious.append(_iou(s, out))
    # measured 0.71-0.96, mean 0.87 (the network alone: tests/models/test_segnet.py)
    assert min(ious) >= 0.65 and np.mean(ious) >= 0.82, ious


def test_the_finer_read_adds_wire_but_never_closes_an_opening_the_coarse_read_sees():
    prob, fine = torch.zeros(1, 1, 60, 90), torch.zeros(1, 1, 60, 90)
    prob[..., 10:40, 10:40] = 0.9
    prob[..., 18:32, 18:32] = 0.1       # the ring's opening, as SegNet at 384 sees it
    fine[..., 5:45, 5:45] = 0.8         # the finer read: the ring a little fatter, its opening closed
    fine[..., 30, 50:85] = 0.7          # and a wire the coarse read lost
    out = _with_fine_wire(prob, fine)
    assert torch.equal(out[..., 18:32, 18:32], prob[..., 18:32, 18:32])
    assert float(out[..., 30, 50:85].min()) == pytest.approx(0.7) and float(out[..., 6, 6]) == pytest.approx(0.8)
    assert torch.equal(out[..., 10:40, 10:18], prob[..., 10:40, 10:18])      # never lowered


def test_empty_sweep_flags_no_piece():
    img = torch.full((1, 3, 64, 96), 0.8)
    out = cut_out(Frame(img), CutoutParams())
    assert "mask_suspect" in out.flags
    assert float(out.alpha.max()) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_pure_and_shapes(device):
    s = sim_scene(0, piece="solitaire", metal="yellow_gold", stone="sapphire", background="white_sweep")
    f = neutralize(scene_frame(s, device), NeutralizeParams())
    before = f.image.clone()
    out = cut_out(f, CutoutParams())
    assert torch.equal(f.image, before) and f.alpha is None and f.masks == {}
    assert out.image.shape == f.image.shape and out.alpha.shape == (1, 1, *f.image.shape[2:])
    assert out.image.device == f.image.device and out.alpha.device == f.image.device
    assert out.alpha.dtype == torch.float32
    assert float(out.alpha.min()) >= 0 and float(out.alpha.max()) <= 1
    # decontamination only touches the fractional edge band
    solid = (out.alpha == 0) | (out.alpha == 1)
    assert torch.equal(torch.where(solid, out.image, before), torch.where(solid, before, before))
    # repeatable (float reductions differ by ~7e-7 between runs on CPU)
    again = cut_out(f, CutoutParams())
    assert float((again.alpha - out.alpha).abs().max()) < 1e-5


def test_network_vetoes_contact_shadows():
    """Grey darkenings of the sweep that the network calls background (shadows) leave the mask."""
    def false_piece(check):
        total = 0.0
        for seed in range(3):
            s = sim_scene(seed, size=(900, 600), piece="band", background="white_sweep")
            out = cut_out(neutralize(scene_frame(s), NeutralizeParams()), CutoutParams(network_checks=check))
            p, t = out.alpha[0, 0].numpy() > 0.5, s.alpha > 0.5
            total += (p & ~t).sum() / t.sum()
        return total

    with_check, without = false_piece(True), false_piece(False)
    # measured: 0.057 vs 0.146 of the band's area wrongly taken as piece
    assert with_check <= 0.6 * without, (with_check, without)


def test_a_shadow_a_little_bluer_than_a_grey_darkening_of_the_sweep_is_still_a_shadow():
    """A fill light of another colour tints a cast shadow: here its blue darkens 8% more than its red and
    green. Within ``shadow_colour`` of a grey darkening it is a shadow (dropped); the strict test alone
    (``shadow_colour=0``) kept it. A grey shadow goes either way."""
    import dataclasses

    scene = sim_scene(1, size=(900, 600), piece="band", background="white_sweep")
    beside = cv2.warpAffine(scene.alpha, np.float32([[1, 0, 40], [0, 1, 25]]), scene.alpha.shape[::-1])
    dark = 0.35 * np.clip(cv2.GaussianBlur(beside, (0, 0), 6) * 1.3, 0, 1) * (scene.alpha < 0.01)
    shadow = dark > 0.05

    def kept(blue: float, tolerance: float) -> float:
        source = (scene.source * (1 - dark[..., None] * np.array([1, 1, blue], np.float32))).astype(np.float32)
        frame = neutralize(scene_frame(dataclasses.replace(scene, source=source)), NeutralizeParams())
        piece = cut_out(frame, CutoutParams(shadow_colour=tolerance)).alpha[0, 0].numpy() > 0.5
        return float((piece & shadow).sum() / shadow.sum())

    # measured: 0.03 with the default tolerance, 0.77 without; a grey shadow 0.006 both ways
    assert kept(1.08, CutoutParams().shadow_colour) < 0.1 < 0.5 < kept(1.08, 0.0)
    assert kept(1.0, CutoutParams().shadow_colour) < 0.1 and kept(1.0, 0.0) < 0.1


def test_on_a_clean_file_a_tinted_darkening_goes_only_where_the_network_is_sure():
    """``_drop_clean_tints`` judges grey parts as ``_drop_shadows`` does, but drops by the network's word only
    under ``unseen_p``: a slab with a crisp rim (no fade) and an uneven shade (no umbra) beside a disc goes
    at a mean probability of 0.05 and stays at 0.2 (a white-metal face the network is unsure of), where the
    first pass's ``shadow_p`` (0.25) drops it."""
    h, w = 120, 160
    disc, slab = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    cv2.circle(disc, (60, 60), 30, 1, -1)
    slab[60:100, 60:130] = 1
    slab &= 1 - disc
    light = np.ones((h, w), np.float32)
    light[60:100, 60:130] = np.linspace(0.55, 0.9, 70, dtype=np.float32)[None]
    enc = np.repeat(light[None], 3, 0)
    enc[:, disc > 0] = np.array([0.8, 0.6, 0.3], np.float32)[:, None]
    core, grey = disc | slab, slab > 0
    flat = _flat(torch.from_numpy(enc)[None], torch.full((1, 3, 1, 1), 0.0025), CutoutParams())
    args = (flat, torch.from_numpy(light ** 2.2)[None, None], grey, core)
    for p, clean_keeps in ((0.05, False), (0.2, True)):
        prob = np.where(core > 0, 0.9, 0.0).astype(np.float32)
        prob[grey] = p
        first = _drop_shadows(*args, prob, outline(core), CutoutParams())
        again = _drop_clean_tints(*args, prob, outline(core), CutoutParams())
        assert first[grey].mean() < 0.3                             # (its non-flat rim pixels stay)
        assert (again[grey].mean() > 0.99) == clean_keeps and again[disc > 0].all()


BANGLE = SAMPLES / "jewelry" / "web_product_photos" / "bracelet_pearl_bangle_IMG_5995.jpg"


@pytest.mark.skipif(not BANGLE.exists(), reason="real sample photos not present (../shared/samples)")
def test_a_gold_bangles_warm_contact_shadow_on_blown_white_leaves_the_mask():
    """A real packshot (8-bit JPEG, the sweep blown to white): the bangle's warm contact shadow under its
    pave disc was kept as a slab (29% of the box below the disc, looked at 3x), because the file's 1-2 level
    ripples read as lines there and lines keep the tint tolerance off; the disc's pave stays piece."""
    from infra.imageio import developed

    alpha = cut_out(neutralize(Frame(image=developed(BANGLE)), NeutralizeParams()), CutoutParams()).alpha[0, 0].numpy()
    assert (alpha[722:745, 400:560] > 0.5).mean() < 0.15        # the shadow below the disc (0.289 before)
    assert (alpha[640:690, 440:500] > 0.5).mean() > 0.95        # the pave disc


def _ring_on_wood(seed: int, with_piece: bool = True) -> tuple[torch.Tensor, np.ndarray]:
    """A grey-gold ring on a wood-like grain (not a smooth sweep), linear RGB; noise drawn from ``seed``."""
    h, w = 240, 360
    grain = np.random.default_rng(0).standard_normal((h, 12)).astype(np.float32)
    grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    wood = np.clip(np.array([0.30, 0.18, 0.09], np.float32) * (1 + 0.25 * grain), 0, 1)
    alpha = np.zeros((h, w), np.float32)
    cv2.circle(alpha, (180, 120), 70, 1.0, 14, lineType=cv2.LINE_AA)
    alpha = alpha if with_piece else np.zeros_like(alpha)
    image = wood * (1 - alpha[..., None]) + np.array([0.75, 0.62, 0.35], np.float32) * alpha[..., None]
    image += np.random.default_rng(seed).normal(0, 0.004, image.shape).astype(np.float32)
    return torch.from_numpy(np.clip(image, 0, 1).transpose(2, 0, 1).copy())[None], alpha


def test_a_clean_plate_makes_a_textured_backdrop_exact():
    image, truth = _ring_on_wood(1)
    plate, _ = _ring_on_wood(2, with_piece=False)
    with_plate = cut_out(Frame(image, plate=plate), CutoutParams())
    without = cut_out(Frame(image), CutoutParams())

    def iou(frame):
        a, g = frame.alpha[0, 0].numpy() > 0.5, truth > 0.5
        return float((a & g).sum() / (a | g).sum())

    assert "backdrop from the clean plate" in " ".join(with_plate.notes)
    assert iou(with_plate) >= 0.95 and iou(with_plate) > iou(without) + 0.05, (iou(with_plate), iou(without))
    hole = np.zeros_like(truth, bool)
    cv2.circle(hole.view(np.uint8), (180, 120), 50, 1, -1)
    assert (with_plate.alpha[0, 0].numpy()[hole] < 0.5).mean() > 0.99     # the ring's interior stays open


@pytest.mark.parametrize("with_plate", [False, True])
def test_a_channel_clipped_in_the_backdrop_does_not_turn_the_others_noise_into_metal(with_plate):
    """A warm light on a light box at ISO 6400: red clipped at 1, green and blue noisy. The shadow test
    reads the shade off all three channels, so their noise made red darker than the backdrop by
    amounts red's own noise (none) never makes, and 43% of the backdrop was kept as faint metal (the
    wide world's band on a light box with its plate: IoU 0.24). A channel whose own noise is far under
    what the shade carries into it is now tested in the carried noise; a channel that is not clipped
    keeps its own."""
    h, w = 240, 360
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 180) ** 2 + (yy - 120) ** 2 < 50 ** 2
    near = (xx - 180) ** 2 + (yy - 120) ** 2 < 60 ** 2

    def shot(piece: bool) -> torch.Tensor:
        image = np.broadcast_to(np.array([1.0, 0.62, 0.38], np.float32), (h, w, 3)).copy()
        image[..., 1:] += rng.normal(0, 0.03, (h, w, 2)).astype(np.float32)
        if piece:
            image[disc] = (0.25, 0.22, 0.2)
        return torch.from_numpy(np.clip(image, 0, 1).transpose(2, 0, 1).copy())[None]

    frame = Frame(shot(True), plate=shot(False) if with_plate else None)
    a = cut_out(frame, CutoutParams(plate_network=False)).alpha[0, 0].numpy() > 0.5
    assert a[disc].mean() > 0.99
    assert a[~near].mean() < 0.001, a[~near].mean()

    # the noise each channel is tested in (two frames of the empty box, each with its own noise): red's
    # is the carried one, green's and blue's their own
    image, plate = shot(False), shot(False)
    own = torch.tensor([0.0025, 0.05, 0.05]).view(1, 3, 1, 1)
    tested = _shadow_sigma(image, linear_to_srgb(image), linear_to_srgb(plate), torch.arange(h * w), own)
    assert tested[0, 0] > CARRIED_NOISE * own[0, 0] and torch.equal(tested[0, 1:], own[0, 1:])


def test_a_highlight_the_colour_of_the_sweep_is_no_hole_but_a_link_gap_is():
    """White metal whose broad highlight reaches the sweep's level drops out in noise-sized
    pinholes (seen in the demo as white squares on a band); they are metal. A link's gap of the
    same size, ringed by wire, shows the sweep and stays open."""
    h, w = 200, 300
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = np.zeros((h, w), np.float32)
    cv2.circle(disc, (100, 100), 45, 1.0, -1, lineType=cv2.LINE_AA)
    highlight = 0.45 + 0.35 * np.exp(-((yy - 100) ** 2 + (xx - 100) ** 2) / (2 * 14.0 ** 2))
    image = np.full((h, w, 3), 0.80, np.float32) * (1 - disc[..., None]) + (highlight * disc)[..., None]
    link = np.zeros((h, w), np.float32)
    cv2.ellipse(link, (220, 100), (16, 10), 0, 0, 360, 1.0, 3, lineType=cv2.LINE_AA)   # a 3 px wire around a gap
    image = image * (1 - link[..., None]) + 0.45 * link[..., None]
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    frame = Frame(torch.from_numpy(np.clip(image, 0, 1).astype(np.float32).transpose(2, 0, 1).copy())[None])
    alpha = cut_out(frame, CutoutParams(network_checks=False)).alpha[0, 0].numpy()
    inside = (yy - 100) ** 2 + (xx - 100) ** 2 < 40 ** 2
    assert alpha[inside].min() > 0.5                  # the highlight is metal
    assert alpha[99:102, 218:223].max() < 0.5         # the link's gap stays open


def test_a_pinhole_deep_in_solid_metal_is_metal_a_link_gap_is_not():
    """A spot exactly the sweep's colour deep inside a grey disc (a specular glint as bright as the
    sweep) is no hole: metal far thicker than the spot surrounds it. A link's gap of the same size
    is ringed by wire no thicker than itself and stays open."""
    h, w = 200, 300
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.full((h, w, 3), 0.80, np.float32)
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 45 ** 2
    image[disc] = 0.3
    image[98:103, 110:115] = 0.80                      # 5x5 glint, 10 px off centre
    link = np.zeros((h, w), np.float32)
    cv2.ellipse(link, (220, 100), (16, 10), 0, 0, 360, 1.0, 3, lineType=cv2.LINE_AA)
    image = image * (1 - link[..., None]) + 0.3 * link[..., None]
    image += np.random.default_rng(5).normal(0, 0.005, image.shape).astype(np.float32)
    frame = Frame(torch.from_numpy(np.clip(image, 0, 1).astype(np.float32).transpose(2, 0, 1).copy())[None])
    # pinholes up to 60 px here (the default fraction of the frame is sized for 1.5 MP and up)
    alpha = cut_out(frame, CutoutParams(network_checks=False, pinhole_frame=1e-3)).alpha[0, 0].numpy()
    assert alpha[99:102, 111:114].min() > 0.5         # the glint is metal
    assert alpha[99:102, 218:223].max() < 0.5         # the link's gap stays open


def _hole_px(mask: np.ndarray, truth: np.ndarray, piece: bool, min_px: int = 9) -> int:
    """Pixels of ``mask``'s enclosed holes of at least ``min_px`` where the truth has piece (or backdrop)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    h, w = mask.shape
    count = 0
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        hole = labels == k
        if x > 0 and y > 0 and x + bw < w and y + bh < h and area >= min_px and (truth[hole].mean() > 0.5) == piece:
            count += int(area)
    return count


@pytest.mark.parametrize("fillers", [{}, {"facet_max_share": 0, "facet_network": True}], ids=["segnet", "holenet"])
@pytest.mark.parametrize("background,piece,seed", [("white_sweep", "pave", 0), ("grey_sweep", "earring", 0)])
def test_facets_matching_the_sweep_are_filled_openings_stay(background, piece, seed, fillers):
    """A stone's facet or a polished face that matches the sweep drops out as a small hole deep in
    the piece; SegNet read on the piece's box (the default), or HoleNet on a window round it (opt-in),
    calls it piece, and it is filled. The openings (the ring's inside, the earring's loop) stay open.
    (The quality bench's scenes at 900 x 600; HoleNet trained on other draws: shoot 777's images.)"""
    from models.simulator import BACKGROUNDS, PIECES

    scene = sim_scene((seed, list(PIECES).index(piece), list(BACKGROUNDS).index(background)), (900, 600),
                      piece=piece, background=background)
    frame = neutralize(scene_frame(scene), NeutralizeParams())
    truth = scene.alpha > 0.5
    before = cut_out(frame, CutoutParams(facet_max_share=0, facet_network=False)).alpha[0, 0].numpy() > 0.5
    cut = cut_out(frame, CutoutParams(**fillers))
    after = cut.alpha[0, 0].numpy() > 0.5
    assert any("HoleNet filled" in n for n in cut.notes) == bool(fillers)     # what the opt-in net did is noted
    assert _hole_px(after, truth, piece=True) < 0.75 * _hole_px(before, truth, piece=True)
    # the openings stay (the matte moves a pixel or so)
    assert _hole_px(after, truth, piece=False) >= _hole_px(before, truth, piece=False) - 20
    assert (after & ~truth).sum() <= (before & ~truth).sum() + 20     # nothing of the backdrop filled


def test_a_facet_the_core_holds_in_scattered_pixels_is_judged_as_the_one_hole_the_matte_makes(monkeypatch):
    """Noise at the threshold leaves some pixels of a facet that matches the sweep in the core: its hole
    is many fragments, each under the size floor, and the matte (alpha 1 only a pixel inside the core)
    makes one hole of them again. The facet fill judges that hole, reading its colour where the core has
    no piece: a facet a little brighter than the sweep is filled whole; an opening that shows the sweep,
    with the same scattered pixels, stays (the network here calls everything piece)."""
    from tasks.cutout import SEGNET_SIZE, _fill_facets

    monkeypatch.setattr("tasks.cutout._piece_probability", lambda enc, params, coarse=False: torch.ones(1, 1, 96, 96))
    h = w = 1200
    yy, xx = np.mgrid[0:h, 0:w]
    core = ((yy - 600) ** 2 + (xx - 600) ** 2 < 450 ** 2).astype(np.uint8)
    enc = np.full((h, w, 3), 0.8, np.float32)
    enc[core > 0] = 0.4
    facet, opening = (slice(500, 512), slice(500, 512)), (slice(700, 712), slice(700, 712))
    for at, level in ((facet, 0.83), (opening, 0.8)):
        enc[at] = level
        core[at] = 0
        core[at][::4, :] = core[at][:, ::4] = 1     # a web of pixels (noise past the threshold, closed): 3 x 3 cells
    params = CutoutParams()
    floor = params.facet_net_px * (0.78 * h / SEGNET_SIZE) ** 2     # the piece's box is ~0.78 of the frame
    assert 9 < floor     # each fragment is under the size floor
    to_torch = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()  # noqa: E731
    out = _fill_facets(core, to_torch(enc), to_torch(np.full_like(enc, 0.8)), params)
    assert out[facet].all() and out[499:513, 499:513].all()
    assert (out[opening] == core[opening]).all()


def test_holenet_fills_a_hole_deep_in_solid_piece_not_an_opening_ringed_by_wire(monkeypatch):
    """Even where HoleNet calls every hole a facet, it fills only a hole deep in solid piece: an eyelet
    ringed by wire thinner than half its width stays open (on real photos HoleNet took pave openwork's
    arcs for facets; README, "HoleNet")."""
    import models.holenet

    monkeypatch.setattr(models.holenet, "facet_probability", lambda net, inputs: np.ones(len(inputs[0]), np.float32))
    h, w = 320, 420
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.full((h, w, 3), 0.97, np.float32)
    image[(yy - 170) ** 2 + (xx - 180) ** 2 < 100 ** 2] = (0.55, 0.45, 0.3)          # a thick disc
    eyelet = (yy - 170) ** 2 + (xx - 291.5) ** 2
    image[(eyelet >= 10 ** 2) & (eyelet < 13 ** 2)] = (0.55, 0.45, 0.3)             # a 3 px wire ring on its edge
    image[(yy - 150) ** 2 + (xx - 160) ** 2 < 5 ** 2] = 0.97                         # a facet dropped out, deep in it
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.004, image.shape), 0, 1).astype(np.float32)
    frame = Frame(srgb_to_linear(torch.from_numpy(noisy)).permute(2, 0, 1)[None].contiguous())
    cut = cut_out(frame, CutoutParams(facet_max_share=0, facet_network=True))
    alpha = cut.alpha[0, 0].numpy()
    assert alpha[150, 160] > 0.5, cut.notes       # the facet is filled
    assert alpha[170, 291] < 0.5                  # the eyelet stays open
    assert alpha[170, 280] > 0.5                  # (its wire is piece)


def test_an_opening_that_looks_like_the_backdrop_stays_open_though_the_network_calls_it_piece():
    """A small opening in thick metal that shows the backdrop (a retouched web photo's white gaps
    between stones): however sure the network is, nothing tells it from a facet that matches the
    backdrop, and a filled opening changes the design, so it stays a hole (QA holds it). A facet a
    little off the backdrop (more than ``min_contrast``, yet inside the noise's threshold) is filled.
    (HoleNet, opt-in, reads the hole's surroundings and fills this one: on real photos it filled such
    openings, which is why it is off; README, "HoleNet".)"""
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(3)

    def cut(spot: float) -> np.ndarray:
        image = np.full((h, w, 3), 0.97, np.float32)
        image[(yy - 120) ** 2 + (xx - 160) ** 2 < 80 ** 2] = (0.55, 0.45, 0.3)
        image[hole] = spot
        image = np.clip(image + rng.normal(0, 0.006, image.shape), 0, 1).astype(np.float32)
        frame = Frame(srgb_to_linear(torch.from_numpy(image)).permute(2, 0, 1)[None].contiguous())
        # facet_p: as if the network called every hole piece
        return cut_out(frame, CutoutParams(facet_p=1e-6)).alpha[0, 0].numpy()

    hole = (yy - 120) ** 2 + (xx - 175) ** 2 < 5 ** 2          # 69 px, ringed by ~60 px of metal
    assert cut(0.965)[hole].mean() < 0.1        # the backdrop within 0.005: an opening, stays open
    assert cut(0.935)[hole].mean() > 0.9        # 0.035 off (the threshold is 8 sigmas, 0.048): a facet


def test_the_demo_bands_highlight_has_no_pinholes():
    """Demo shoot image 5 (P1005, white metal on a white sweep): its broad highlight used to drop
    out in pinholes that the background stage then painted white (squares in the export)."""
    from models.simulator import render_image

    scene = render_image(7, 5, (1536, 1024))
    frame = Frame(torch.from_numpy(scene.source.transpose(2, 0, 1).copy())[None])
    alpha = cut_out(neutralize(frame, NeutralizeParams()), CutoutParams()).alpha[0, 0].numpy()
    assert (scene.alpha[420:540, 650:950] > 0.99).all()          # solid metal in the truth
    assert (alpha[420:540, 650:950] > 0.5).all()


def test_a_noise_free_jpeg_plate_does_not_cut_out_the_compression_blocks():
    """The wide world's pave on coloured paper: ISO 800 under JPEG quality 33, shot and plate. Most
    backdrop pixels get the plate's very codes, so the median departure (the noise) read ~0 while the
    8x8 blocks step by 0.01-0.02, and blocks all over the frame were cut out as piece (IoU 0.83 on the
    network without the plate, 0.41 with it; the noise is now floored by the departures' 90th
    percentile: 0.73, what is left is the ring's hard shadow)."""
    from bench.quality import run_case

    with_plate = run_case("pave", "colored_paper", 0, (900, 600), "cpu", world="wide", known_light=True, plate=True)
    assert with_plate["plate"]
    assert with_plate["iou"] >= 0.65, with_plate


@pytest.mark.parametrize("piece,background,without,floor", [
    ("band", "beige_paper", 0.35, 0.85),     # white metal mirroring beige paper at ISO 6400: 0.23 -> 0.92
    ("chain", "white_sweep", 0.25, 0.55),    # a defocused white-gold chain at ISO 1600: 0.11 -> 0.68
])
def test_with_a_plate_platenet_tells_grey_metal_from_its_shadow(piece, background, without, floor):
    """The wide world with its clean plate: a grey or mirroring metal face darkens the plate as its
    shadow does, and in camera noise no per-pixel test tells them apart, so the faces went with the
    shadow; PlateNet, which reads the shot and the plate whole, keeps them."""
    from bench.quality import run_case

    def case(**cutout):
        return run_case(piece, background, 0, (900, 600), "cpu", world="wide", known_light=True, plate=True,
                        overrides={"cutout": cutout})

    assert case(plate_network=False)["iou"] < without
    assert case()["iou"] >= floor


@pytest.mark.parametrize("piece", ["band", "pave"])
def test_the_simulators_clean_plate_beats_the_network_on_a_desk(piece):
    """On a textured desk the cut-out without a plate falls to the network; with the simulator's own
    clean plate of the scene (same light and camera, its own noise) the grain is known and the cut-out
    is better (480x320, seed 0: band 0.92 -> 0.97, pave 0.85 -> 0.97)."""
    from bench.quality import run_case

    without = run_case(piece, "textured_desk", 0, (480, 320), "cpu")
    with_plate = run_case(piece, "textured_desk", 0, (480, 320), "cpu", plate=True)
    assert with_plate["plate"] and not without["plate"]
    assert with_plate["iou"] >= 0.95 and with_plate["iou"] > without["iou"] + 0.03
    assert with_plate["hole_rec"] >= 0.99


def test_component_mean_in_slices_is_the_mean_over_each_component():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (1500, 2000)).astype(np.int32)   # ~3 slices of a million pixels
    flags, values = rng.random(labels.shape) < 0.3, rng.random(labels.shape).astype(np.float32)
    for v in (flags, values):
        expected = [v[labels == k].astype(np.float64).mean() for k in range(5)]
        got = component_mean(labels, 6, v)     # a sixth label no pixel has: 0
        assert np.allclose(got[:5], expected, rtol=1e-12) and got[5] == 0
    assert np.array_equal(component_mean(labels, 5, flags) * np.bincount(labels.ravel()),
                          np.bincount(labels[flags], minlength=5))   # counts: exact


def test_part_area_is_the_component_area_and_leaves_the_mask_alone():
    """The umbra test's flood fill measures the part holding a pixel as the frame's labelling would."""
    import cv2

    from tasks.cutout import _part_area

    mask = (np.random.default_rng(0).random((120, 160)) > 0.45).astype(np.uint8)
    before = mask.copy()
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    for k in range(1, n):
        assert _part_area(mask, tuple(np.argwhere(labels == k)[0])) == stats[k, cv2.CC_STAT_AREA]
    assert np.array_equal(mask, before)


def _links(mask: np.ndarray, row: int, x0: int, x1: int) -> None:
    """Draw a chain of 1 px wire links (ellipses that overlap their neighbours) along ``row``."""
    for x in range(x0 + 7, x1 - 7, 11):
        cv2.ellipse(mask, (x, row), (7, 4), 0, 0, 360, 1, 1)


def test_the_network_judges_no_shadow_it_cannot_see():
    """``_unseen_lines``: a chain of 1-2 px links far from all the network calls piece is beyond its
    sight (at 384 px it sees the backdrop around), and so is a grey stretch of one between
    highlights; a hair (no loops), a sliver as thin beside a piece it saw, a speck on a part of the
    mask it saw, a wide slab or a lone speck it can judge."""
    from tasks.cutout import _unseen_lines

    mask = np.zeros((220, 300), np.uint8)
    _links(mask, 12, 20, 280)        # a chain, far from the piece
    mask[30:32, 20:280] = 1          # a hair
    mask[120:122, 20:40] = 1         # a grey stretch of a chain whose other links are no candidates
    mask[150:152, 100:200] = 1       # a sliver along the piece's edge
    mask[195:197, 150:152] = 1       # a speck on the piece's mask, 5 px past what the network calls piece
    mask[60:100, 20:100] = 1         # a slab
    mask[60:63, 200:203] = 1         # a lone speck
    core = mask.copy()
    _links(core, 121, 40, 280)
    core[153:199, 100:200] = 1
    prob = np.zeros(mask.shape, np.float32)
    prob[153:190, 100:200] = 0.9     # the piece the network saw
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    every = np.arange(n) > 0
    blind = _unseen_lines(core, labels, stats, every, prob, width=4.0)
    at = ((12, 20), (30, 150), (120, 25), (150, 150), (195, 150), (80, 50), (61, 201))
    assert [bool(blind[labels[y, x]]) for y, x in at] == [True, False, True, False, False, False, False]
    assert not _unseen_lines(core, labels, stats, every, prob, width=0.0).any()
    chain = labels[12, 20]
    assert not _unseen_lines(core, labels, stats, every & (np.arange(n) != chain), prob, 4.0)[chain]


def test_a_chain_the_network_cannot_see_is_not_called_a_shadow():
    """The wide world's white-gold chain on beige paper at 1200x800: its 2-3 px wire is under one of
    SegNet's pixels, so the network reads the paper around it and gives the grey chain no piece
    probability. Taken as a shadow verdict, that dropped the chain (IoU 0.05); judged only where the
    network can see, the chain stays (0.73)."""
    from bench.quality import WORLDS
    from models.simulator import render_scene

    pieces, backs = WORLDS["wide"]
    s = render_scene(np.random.default_rng([1, pieces.index("chain"), backs.index("beige_paper")]), (1200, 800),
                     piece="chain", background="beige_paper", world="wide")
    frame = neutralize(scene_frame(s), NeutralizeParams())
    assert _iou(s, cut_out(frame, CutoutParams())) >= 0.6
    assert _iou(s, cut_out(frame, CutoutParams(shadow_net_width=0))) < 0.2


def test_a_cut_out_carried_onto_the_colour_as_shot_keeps_its_outline_and_takes_the_shots_colours():
    """When the light cannot be confirmed the colour is left as shot and the cut-out made on the
    neutralized rendering is carried onto it (``matte_onto``): the same alpha, masks, flags and notes;
    every pixel off the edge is the shot's own, and a mixed edge pixel takes the shot's piece colour
    (the cast times what the neutral rendering gives: the fill is linear), not the backdrop's."""
    scene = sim_scene(1, piece="band", background="white_sweep")
    neutral = scene_frame(scene)
    cast = torch.tensor([1.0, 0.9, 0.7]).view(1, 3, 1, 1)
    shot = Frame(neutral.image * cast, notes=("develop",))
    cut = cut_out(neutral, CutoutParams()).flagged("mask_suspect", "cutout: a flag it raised")
    carried = matte_onto(shot, cut.alpha, cut.masks, cut.flags, cut.notes)
    assert torch.equal(carried.alpha, cut.alpha) and torch.equal(carried.masks["piece"], cut.masks["piece"])
    assert carried.flags == ("mask_suspect",) and carried.notes == ("develop", *cut.notes)
    a = cut.alpha
    mixed = ((a > 0) & (a < 1)).expand_as(shot.image)
    assert int(mixed.sum()) > 300
    assert torch.equal(carried.image[~mixed], shot.image[~mixed])
    # the edge is the shot's own piece colour: carried onto the neutral rendering too, the cast apart
    on_neutral = matte_onto(neutral, cut.alpha, cut.masks, (), ()).image
    assert torch.allclose(carried.image, on_neutral * cast, atol=1e-5)
    got = carried.image[mixed].view(3, -1).mean(1)
    piece = shot.image[(a == 1).expand_as(shot.image)].view(3, -1).mean(1)
    backdrop = shot.image[(a == 0).expand_as(shot.image)].view(3, -1).mean(1)
    assert float((got - piece).abs().max()) < 0.5 * float((got - backdrop).abs().max())   # not the backdrop's


def test_a_colour_off_the_backdrop_to_piece_line_is_no_more_backdrop_than_decided():
    """``_between``: a pixel on the line from the backdrop to the piece colour gets its place on it; one
    no mix of the two makes (a bright bead on a dark rim, by a blue paper) takes the larger of that and
    the alpha it was decided with, unless the frame's noise reaches that far off the line, and only
    with a decision given; where the two colours are too alike to tell, the fallback."""
    from tasks.cutout import _between

    bg = torch.tensor([0.30, 0.32, 0.50]).view(1, 3, 1, 1).expand(1, 3, 1, 5)
    fg = torch.tensor([0.10, 0.10, 0.10]).view(1, 3, 1, 1).expand(1, 3, 1, 5)
    bead = torch.tensor([[0.75], [0.72], [0.70]])[None]
    image = torch.stack([0.7 * bg[..., 0] + 0.3 * fg[..., 0],       # a mix: 30% piece
                         bg[..., 0] + 0.01,                        # the backdrop, in its noise
                         bead,                                     # a bright bead
                         fg[..., 0],                               # the piece
                         0.5 * bg[..., 0] + 0.5 * fg[..., 0] + torch.tensor([[0.22], [-0.2], [0.0]])[None]],  # off, half way
                        -1)
    decided = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.1]).view(1, 1, 1, 5)
    fallback = torch.full((1, 1, 1, 5), 0.7)
    a = _between(image, fg, bg, fallback, decided)[0, 0, 0]
    assert a[0] == pytest.approx(0.3, abs=1e-4) and a[1] < 0.05 and a[3] == pytest.approx(1.0)
    assert a[2] == pytest.approx(0.9) and a[4] == pytest.approx(0.5, abs=1e-4)
    assert _between(image, fg, bg, fallback, decided, noise=0.3)[0, 0, 0, 2] < 0.05   # the bead, in that much noise
    assert _between(image, fg, bg, fallback)[0, 0, 0, 2] < 0.05                       # and with no decision
    alike = _between(image, bg + 0.02, bg, fallback, decided)[0, 0, 0]
    assert torch.allclose(alike, fallback[0, 0, 0])


def test_the_matte_fills_on_the_pieces_box_grown_by_their_reach_not_the_frame(monkeypatch):
    """A small piece in a large frame: the matte's push-pull fills are made on the piece's box grown by
    their coarsest level (2 ** MATTE_LEVELS px) and squared to whole blocks of it, not on the whole frame
    (at 24 MP their coarse levels over the frame were half the matte's time); what lies beyond is not
    read: a bright patch past that reach changes nothing. Outside the piece's box alpha is 0 and the
    colour the frame's."""
    import tasks.cutout as cutout
    from tasks.cutout import MATTE_LEVELS, _matte

    block = 2 ** MATTE_LEVELS
    h, w = 5 * block + 37, 7 * block + 11
    image = torch.full((1, 3, h, w), 0.6)
    hard = torch.zeros((1, 1, h, w))
    hard[..., 600:700, 900:1000] = 1
    image[..., 600:700, 900:1000] = torch.tensor([0.7, 0.5, 0.2]).view(1, 3, 1, 1)
    image[..., 601:699, 1000] = torch.tensor([0.67, 0.53, 0.32]).view(1, 3, 1)    # a rim of 70% piece beside it
    seen = []
    fill = cutout.fill_holes
    monkeypatch.setattr(cutout, "fill_holes", lambda img, *a, **k: seen.append(img.shape[-2:]) or fill(img, *a, **k))
    alpha, colour = _matte(image, hard, hard.clone(), 2)
    grown = (range(600 - 4 - block, 700 + 4 + block), range(900 - 4 - block, 1000 + 4 + block))
    rows, cols = ((r.start // block * block, -(-r.stop // block) * block) for r in grown)
    assert seen == [(rows[1] - rows[0], cols[1] - cols[0])] * 2
    far = image.clone()
    far[..., :, cols[1]:] = 1.0                   # past the fills' reach
    again, colour_again = _matte(far, hard, hard.clone(), 2)
    assert torch.equal(alpha, again) and torch.equal(colour[..., :, :cols[1]], colour_again[..., :, :cols[1]])
    assert float(alpha[..., 1010:, :].abs().max()) == 0 and float(alpha[..., :, 1010:].max()) == 0
    assert 0.6 < float(alpha[..., 601:699, 1000].min()) <= float(alpha[..., 601:699, 1000].max()) < 0.8   # the rim
    assert torch.equal(colour[..., :590, :], image[..., :590, :])


def test_a_speck_the_matte_cut_off_the_piece_goes_with_its_fringe():
    """A 4x3 speck joined to the piece by a faint 1 px thread: the matte makes the thread fractional and
    the speck a part of its own, under the frame's floor for parts (``min_area``): its alpha goes, and so
    does the fringe around it that the piece does not share. The piece, its fringe and a part over the
    floor stay."""
    from tasks.cutout import _drop_islands_

    alpha = torch.zeros((1, 1, 400, 600))              # the floor: 2e-4 of it, 48 px
    alpha[..., 80:160, 60:200] = 1.0                   # the piece
    alpha[..., 79, 60:200] = 0.4                      # its fringe
    alpha[..., 60:63, 120:124] = 1.0                  # the speck, 17 px above the piece
    alpha[..., 59, 120:124] = alpha[..., 63, 120:124] = 0.3
    alpha[..., 64:79, 121] = 0.2                      # the thread, fractional once matted
    alpha[..., 20:33, 250:266] = 1.0                  # a part of 13 x 16 = 208 px
    before = alpha.clone()
    _drop_islands_(alpha, CutoutParams())
    assert float(alpha[..., 56:65, 116:128].max()) == 0            # the speck and its fringe (2 px)
    assert torch.equal(alpha[..., 79:, :], before[..., 79:, :])    # the piece and its fringe, all below
    assert torch.equal(alpha[..., 20:33, 250:266], before[..., 20:33, 250:266])
    assert torch.equal(alpha[..., 66:76, 121], before[..., 66:76, 121])   # the thread beyond its reach stays


def test_a_faint_part_the_network_sees_nothing_of_goes_a_piece_that_departs_or_is_seen_stays():
    """Beside the piece: a blob read on faint evidence alone (no pixel surely off the backdrop) that the
    network calls background goes (a hot spot the fit missed, JPEG blocks on it). A part with a few
    sure pixels, a faint part the network sees, a chain's links too thin for the network, a part
    under the size floor and the largest part itself (even when faint and unseen) all stay."""
    from tasks.cutout import _drop_unseen_faint

    h, w = 400, 600
    core, prob, sure = np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32), np.zeros((h, w), bool)
    core[100:300, 100:300] = 1                      # the piece (neither sure nor seen: it is the largest)
    core[20:60, 400:460] = 1                         # the faint blob nobody sees: goes
    core[100:140, 400:460] = 1                       # a part with 4% sure pixels throughout: stays
    sure[100:140, 400:460][::5, ::5] = True
    core[200:240, 400:460] = 1                       # a faint part the network sees: stays
    prob[200:240, 400:460] = 0.9
    for i in range(4):                               # a chain's links of 1 px wire, unseen: stay
        cv2.circle(core, (380 + 9 * i, 330), 5, 1, 1)
    core[20:25, 200:205] = 1                         # 25 px, under the floor (48 px): not judged here
    kept = _drop_unseen_faint(core.copy(), prob, sure, CutoutParams())
    assert not kept[20:60, 400:460].any()
    for part in [(slice(100, 300), slice(100, 300)), (slice(100, 140), slice(400, 460)),
                 (slice(200, 240), slice(400, 460)), (slice(320, 340), slice(370, 420)), (slice(20, 25), slice(200, 205))]:
        assert np.array_equal(kept[part], core[part])
    unexempt = _drop_unseen_faint(core.copy(), prob, sure, CutoutParams(shadow_net_width=0))
    assert not unexempt[320:340, 370:420].any()      # the links stay only as lines too thin for the network


def test_a_hot_spot_larger_than_the_piece_beside_it_is_no_piece():
    """The largest part is kept as the piece however faint and unseen, but not when a part with evidence
    (pixels surely off the backdrop, or seen by the network) is at least half its size: then a lamp's
    hot spot with JPEG blocks on it (no sure pixel, probability 0) that outgrew a thin chain beside it
    goes, and the chain stays. Half the size or less, the faint part is still the piece."""
    from tasks.cutout import _drop_unseen_faint

    h, w = 400, 600
    core, prob, sure = np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32), np.zeros((h, w), bool)
    core[30:150, 420:580] = 1                       # the hot spot: 19200 px, faint and unseen
    chain = np.zeros((h, w), np.uint8)
    cv2.ellipse(chain, (200, 250), (150, 100), 0, 0, 360, 1, 19)     # a thick chain: ~16000 px, sure and seen
    core |= chain
    sure |= chain > 0
    prob[chain > 0] = 0.7
    assert 0.5 < chain.sum() / 19200 < 1
    kept = _drop_unseen_faint(core.copy(), prob, sure, CutoutParams())
    assert not kept[30:150, 420:580].any()
    assert np.array_equal(kept[chain > 0], core[chain > 0])
    thin = np.zeros((h, w), np.uint8)
    cv2.ellipse(thin, (200, 250), (150, 100), 0, 0, 360, 1, 9)      # a part under half the spot's size
    core = np.where(chain > 0, 0, core).astype(np.uint8) | thin
    sure, prob = thin > 0, np.where(thin > 0, 0.7, 0).astype(np.float32)
    assert thin.sum() * 2 < 19200
    kept = _drop_unseen_faint(core.copy(), prob, sure, CutoutParams())
    assert np.array_equal(kept, core)


def test_a_wide_unseen_region_far_from_sure_pixels_leaves_the_piece_it_is_joined_to():
    """Light bounced into a ring's opening, brighter than the backdrop's fit there, is read as faint flat
    metal joined to the ring: a region over 3 px from every sure pixel, that the network calls
    background and that is wide enough for it to see (an inscribed radius of two of its pixels), goes;
    the ring stays. Seen by the network, or as narrow as a faint chain's wire, such a region stays."""
    from tasks.cutout import _drop_unseen_faint

    h, w = 400, 600
    ring = np.zeros((h, w), np.uint8)
    cv2.ellipse(ring, (300, 200), (160, 110), 0, 0, 360, 1, 30)     # a band, surely off the backdrop
    spot = np.zeros((h, w), np.uint8)
    cv2.circle(spot, (195, 200), 45, 1, -1)                         # joined to its inside edge
    spot &= 1 - ring
    wire = np.zeros((h, w), np.uint8)
    cv2.line(wire, (330, 80), (330, 320), 1, 3)                     # 3 px wide, faint, across the opening
    core = ring | spot | wire
    sure = ring > 0
    prob = np.where(ring > 0, 0.9, 0.0).astype(np.float32)
    kept = _drop_unseen_faint(core.copy(), prob, sure, CutoutParams())
    assert np.array_equal(kept[ring > 0], core[ring > 0])
    assert np.array_equal(kept[wire > 0], core[wire > 0])           # narrower than the network's sight
    assert kept[spot > 0].mean() < 0.2                              # what is left lies within 3 px of the band
    seen = np.where(spot > 0, 0.5, prob).astype(np.float32)
    assert np.array_equal(_drop_unseen_faint(core.copy(), seen, sure, CutoutParams()), core)


def test_a_chain_hung_from_a_piece_the_network_sees_is_judged_link_by_link():
    """``_unseen_lines`` on a chain joined to a pendant the network sees: a stretch of grey links away
    from the pendant is beyond its sight as a loose chain's is; the stretch against the pendant is not,
    nor a sliver hung on the pendant far from what it saw, which closes no loop of its own (a JPEG speck
    beside a ring). (Judged by its whole part, the chain was seen as soon as the pendant was, and
    dropped as a shadow.)"""
    from tasks.cutout import _unseen_lines

    mask = np.zeros((160, 320), np.uint8)
    _links(mask, 60, 20, 130)                       # a grey stretch of the chain, far from the pendant
    _links(mask, 60, 170, 290)                      # and the stretch that runs into it
    core = mask.copy()
    _links(core, 60, 20, 290)                       # the whole chain
    core[64:140, 260:310] = 1                        # the pendant, joined to the chain's last links
    mask[100, 200:212] = 1                           # a sliver hung on the pendant (closing no loop of its own)
    core[100, 200:260] = 1
    prob = np.zeros(mask.shape, np.float32)
    prob[64:140, 260:310] = 0.9
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    far, close, sliver = labels[60, 20], labels[60, 170], labels[100, 200]     # each stretch's left end
    assert len({far, close, sliver}) == 3 and min(far, close, sliver) > 0
    blind = _unseen_lines(core, labels, stats, np.arange(n) > 0, prob, width=4.0)
    assert blind[far] and not blind[close] and not blind[sliver]


def _edge_error(alpha: torch.Tensor, truth: np.ndarray) -> float:
    """Mean |alpha - truth| over the truth's soft edge."""
    edge = (truth > 0.02) & (truth < 0.98)
    return float(np.abs(alpha[0, 0].cpu().numpy() - truth)[edge].mean())


@pytest.mark.parametrize("piece", ["band", "earring"])
def test_a_frame_above_the_work_size_is_decided_shrunk_and_matted_at_full_size(piece):
    """A frame longer than ``work_size`` is cut out on the frame shrunk to it (a 24 MP back's frame at
    3000 px by default: the per-pixel tests' scale and noise, a quarter of the pixels) and matted at full
    size from its own colours: the outline as good as deciding at full size, the edge's alpha as close
    to the truth (the shrunk cut-out's alpha grown back bilinear was 0.18-0.20 further off, in mean |alpha -
    truth| over the truth's soft edge)."""
    scene = sim_scene(1, size=(960, 640), piece=piece, background="white_sweep")
    frame = neutralize(scene_frame(scene), NeutralizeParams())
    full = cut_out(frame, CutoutParams(work_size=None))
    shrunk = cut_out(frame, CutoutParams(work_size=480))
    assert shrunk.alpha.shape == full.alpha.shape and any("decided at 480x320" in n for n in shrunk.notes)
    iou_full, iou_shrunk = _iou(scene, full), _iou(scene, shrunk)
    edge_full, edge_shrunk = _edge_error(full.alpha, scene.alpha), _edge_error(shrunk.alpha, scene.alpha)
    assert iou_shrunk >= 0.95 and iou_shrunk >= iou_full - 0.01, (iou_full, iou_shrunk)
    assert edge_shrunk <= edge_full + 0.03, (edge_full, edge_shrunk)
    grown = F.interpolate(cut_out(frame.replace(image=F.interpolate(frame.image, size=(320, 480), mode="area")),
                                  CutoutParams()).alpha, size=(640, 960), mode="bilinear", align_corners=False)
    assert edge_shrunk < _edge_error(grown, scene.alpha) - 0.1


def test_islands_the_shrunk_cut_out_kept_stay_those_the_full_size_matte_made_go():
    """``_drop_islands_`` with the islands the outline was decided with (a chain's wire found in pieces in
    camera noise, kept on purpose on the shrunk frame): an island touching them stays, another goes."""
    from tasks.cutout import _drop_islands_

    alpha = torch.zeros((1, 1, 400, 600))
    alpha[..., 80:160, 60:200] = 1.0                  # the piece
    alpha[..., 20:24, 300:304] = 1.0                  # an island the shrunk cut-out had too
    alpha[..., 40:44, 400:404] = 1.0                  # one the full-size matte made
    islands = torch.zeros_like(alpha, dtype=torch.bool)
    islands[..., 18:22, 298:302] = True
    _drop_islands_(alpha, CutoutParams(), islands)
    assert float(alpha[..., 20:24, 300:304].min()) == 1 and float(alpha[..., 40:44, 400:404].max()) == 0
    assert float(alpha[..., 80:160, 60:200].min()) == 1


def test_with_a_plate_above_the_work_size_the_plate_is_shrunk_with_the_frame():
    """The ring on wood with its clean plate, decided at half size (the plate shrunk alike): the plate's
    way, its outline as good as at full size, the interior open."""
    image, truth = _ring_on_wood(1)
    plate, _ = _ring_on_wood(2, with_piece=False)
    full = cut_out(Frame(image, plate=plate), CutoutParams(work_size=None))
    shrunk = cut_out(Frame(image, plate=plate), CutoutParams(work_size=180))
    notes = " ".join(shrunk.notes)
    assert "backdrop from the clean plate" in notes and "decided at 180x120, matted at 360x240" in notes

    def iou(frame):
        a, g = frame.alpha[0, 0].numpy() > 0.5, truth > 0.5
        return float((a & g).sum() / (a | g).sum())

    assert iou(shrunk) >= 0.95 and iou(shrunk) >= iou(full) - 0.01, (iou(full), iou(shrunk))
    hole = np.zeros_like(truth, bool)
    cv2.circle(hole.view(np.uint8), (180, 120), 50, 1, -1)
    assert (shrunk.alpha[0, 0].numpy()[hole] < 0.5).mean() > 0.99


def test_a_milgrain_edge_above_the_work_size_keeps_its_beads(tmp_path):
    """Above the cut-out's work size the beads on the earrings' rim lie in the band the full-size matte
    decides: each is brighter than both the dark rim filled in from inside and the coloured paper, so
    the line between those two called it backdrop (at 3600 x 2400 under the default 3000 px work size
    23.5% of the features were lost until stop 69; here 2400 x 1600 under 2000 px, the same shrink:
    18%, now 1.6%). ``_between`` leaves a colour no mix of the two makes to the shrunk decision."""
    from bench.cutout_only import SKIPPED
    from bench.trust import developed, features_lost
    from flows.retouch import SHOOT_LEVEL, checked_preset
    from models.simulator import render_image, write_scene
    from models.simulator.writers import read_truth
    from tasks.pipeline import run_stages, stage_params

    # the trust bench's training set (seed 101), image 2: E1002, earrings with milgrain edges on coloured paper
    path = write_scene(tmp_path, render_image(101, 2, (2400, 1600)), 2, "tif")
    truth = read_truth(tmp_path / "truth" / path.stem)
    params = stage_params({k: v for k, v in checked_preset("catalog").stages.items() if k not in SHOOT_LEVEL})
    params["cutout"] = params["cutout"].model_copy(update={"work_size": 2000})
    with torch.inference_mode():
        image = developed(path)
        cut, _, _ = run_stages(Frame(image), params, SKIPPED, want_reference=False)   # as bench/cutout_only.py
    assert any("decided at 2000x1333" in n for n in cut.notes), cut.notes     # the shrunk decision is what is tested
    lost = features_lost(truth["details"], cut.alpha[0, 0].numpy() > 0.5, cut.image[0].permute(1, 2, 0).numpy(),
                         image[0].permute(1, 2, 0).numpy())
    assert lost <= 0.05, lost
