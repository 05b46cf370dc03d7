"""Tests for the procedural studio simulator (models.simulator). Fast: small frames."""

from __future__ import annotations

import numpy as np
import pytest
import cv2

from models.simulator import (BACKGROUNDS, METALS, PIECES, STONES, develop_dng, image_rng, lighting_gain,
                              load_truth, render_image, render_scene, synth_shoot)

SIZE = (480, 320)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory):
    out = tmp_path_factory.mktemp("shoot")
    paths = synth_shoot(out, 6, 11, size=SIZE)
    return out, paths


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_formats(shoot):
    out, paths = shoot
    assert [p.suffix for p in paths] == [".dng", ".jpg", ".tif"] * 2
    for p in paths:
        assert p.parent == out and p.exists()
        sku, view = p.stem.split("_")
        assert sku[0] in "RSPCE" and len(sku) == 5 and sku[1:].isdigit()
        assert view in ("front", "top", "side", "detail")
        t = load_truth(out, p.stem)
        assert t["clean"].shape == (SIZE[1], SIZE[0], 3) and t["clean"].dtype == np.float32
        assert t["alpha"].shape == SIZE[::-1] and t["alpha"].dtype == np.float32
        assert t["defects"].dtype == np.uint8 and t["details"].dtype == np.uint8
        m = t["meta"]
        for k in ("piece", "metal", "stone", "background", "illuminant", "lighting", "defects", "format", "size",
                  "seed"):
            assert k in m
        assert m["format"] == p.suffix[1:] and m["size"] == list(SIZE) and m["seed"] == 11
        assert m["illuminant"]["rgb"][1] == pytest.approx(1.0)
        assert 2800 <= m["illuminant"]["kelvin"] <= 7500


def test_deterministic_bytes(shoot, tmp_path):
    out, _ = shoot
    synth_shoot(tmp_path, 6, 11, size=SIZE)
    a, b = _files(out), _files(tmp_path)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k


def test_image_k_independent_of_shoot_size(shoot, tmp_path):
    out, paths = shoot
    p2 = synth_shoot(tmp_path, 2, 11, size=SIZE)
    assert [p.name for p in p2] == [p.name for p in paths[:2]]
    for p, q in zip(paths[:2], p2):
        assert p.read_bytes() == q.read_bytes()


def test_dng_roundtrip(shoot):
    rawpy = pytest.importorskip("rawpy")
    out, paths = shoot
    dngs = [p for p in paths if p.suffix == ".dng"]
    assert dngs
    for p in dngs:
        with rawpy.imread(str(p)) as raw:
            assert raw.raw_image.shape == SIZE[::-1]
            assert list(raw.black_level_per_channel) == [256] * 4 and raw.white_level == 4095
        dev = develop_dng(p)
        k = int(load_truth(out, p.stem)["meta"]["index"])
        src = render_image(11, k, SIZE).source
        a, b = dev[4:-4, 4:-4], src[4:-4, 4:-4]
        scale = float((a * b).sum() / (b * b).sum())
        assert scale == pytest.approx(1.0, abs=0.01)
        # pixel noise dominates single-pixel error; compare smoothed images too
        assert np.abs(a - b).mean() < 0.015
        sa, sb = cv2.blur(a, (5, 5)), cv2.blur(b, (5, 5))
        assert np.abs(sa - sb).mean() < 0.004


def test_jpeg_tiff_encode_source(shoot):
    import tifffile
    from PIL import Image
    out, paths = shoot
    for p in paths:
        k = int(load_truth(out, p.stem)["meta"]["index"])
        src = render_image(11, k, SIZE).source
        if p.suffix == ".jpg":
            im = Image.open(p)
            assert im.info.get("icc_profile")
            lin = (np.asarray(im).astype(np.float32) / 255)
            tol = 0.02
        elif p.suffix == ".tif":
            with tifffile.TiffFile(p) as tf:
                assert tf.pages[0].dtype == np.uint16
                assert 34675 in tf.pages[0].tags  # ICC
                lin = tf.asarray().astype(np.float32) / 65535
            tol = 1e-3
        else:
            continue
        lin = np.where(lin <= 0.04045, lin / 12.92, ((lin + 0.055) / 1.055) ** 2.4)
        assert np.abs(lin - src).mean() < tol


def test_alpha_fractional_and_holes():
    for piece in ("band", "pave", "solitaire"):
        sc = render_scene(np.random.default_rng(3), SIZE, piece=piece, defects=False)
        a = sc.alpha
        frac = ((a > 0.05) & (a < 0.95)).sum()
        assert frac > 50, piece
        cx, cy = sc.meta["ring_center"] if "ring_center" in sc.meta else (None, None)
        if cx is not None:
            assert a[int(round(cy)), int(round(cx))] == 0.0, piece
    sc = render_scene(np.random.default_rng(4), SIZE, piece="chain", defects=False)
    # holes inside the links: background pixels fully enclosed by the chain
    inv = (sc.alpha < 0.02).astype(np.uint8)
    n, lab = cv2.connectedComponents(inv, connectivity=4)
    assert n > 10  # background + many link holes


def test_piece_inside_frame_with_margin():
    for i, piece in enumerate(PIECES):
        sc = render_scene(np.random.default_rng(20 + i), SIZE, piece=piece, defects=False)
        a = sc.alpha
        assert a[:5].max() == 0 and a[-5:].max() == 0 and a[:, :5].max() == 0 and a[:, -5:].max() == 0
        ys, xs = np.nonzero(a > 0.5)
        box = (xs.max() - xs.min()) * (ys.max() - ys.min()) / (SIZE[0] * SIZE[1])
        assert 0.08 < box < 0.6, (piece, box)


def test_chain_wire_width():
    for seed in (5, 6):
        sc = render_scene(np.random.default_rng(seed), SIZE, piece="chain", defects=False)
        wire = (sc.details == 5).astype(np.uint8)
        assert wire.sum() > 200
        # distance transform of the (4x upsampled) wire mask: on the medial ridge it is half the width
        up = cv2.resize(wire, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
        d = cv2.distanceTransform(np.pad(up, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        ridge = (d >= cv2.dilate(d, np.ones((3, 3), np.uint8))) & (up > 0)
        widths = 2 * d[ridge] / 4
        assert 2.0 <= np.median(widths) <= 4.0, np.median(widths)
        assert np.percentile(widths, 90) <= 4.6
        assert 2.0 <= sc.meta["chain"]["wire_px"] <= 4.0


def test_details_present_per_piece():
    want = {"pave": {1}, "solitaire": {4}, "chain": {5}, "earring": {2, 3}}
    for piece, labels in want.items():
        sc = render_scene(np.random.default_rng(9), SIZE, piece=piece, defects=False)
        present = set(np.unique(sc.details).tolist()) - {0}
        assert labels <= present, (piece, present)


def test_defects_nonempty_and_disjoint_from_details():
    kinds = set()
    for seed in range(6):
        sc = render_scene(np.random.default_rng(100 + seed), SIZE, piece=PIECES[seed % len(PIECES)])
        assert sc.defects.any()
        assert not ((sc.defects > 0) & (sc.details > 0)).any()
        for d in sc.meta["defects"]:
            kinds.add(d["kind"])
            box = sc.defects[d["y"]:d["y"] + d["h"], d["x"]:d["x"] + d["w"]]
            assert box.any()
        assert set(np.unique(sc.defects).tolist()) <= {0, 1, 2, 3, 4}
    assert {"dust", "lint", "scratch"} <= kinds


def test_no_defects_mode():
    sc = render_scene(np.random.default_rng(1), SIZE, defects=False)
    assert not sc.defects.any() and sc.meta["defects"] == []
    assert sc.meta["illuminant"]["rgb"] == [1.0, 1.0, 1.0]
    assert np.abs(sc.source - sc.clean).mean() < 0.01  # noise only


def test_cast_matches_background_ratio():
    for seed in range(4):
        sc = render_scene(np.random.default_rng(200 + seed), SIZE, background="white_sweep")
        m = sc.meta
        bg = (sc.alpha == 0) & (sc.defects == 0)
        gain = lighting_gain(m["lighting"], *SIZE)
        ratio = (sc.source[bg] / gain[bg][:, None]).mean(0) / sc.clean[bg].mean(0)
        ratio_n = ratio / ratio[1]
        np.testing.assert_allclose(ratio_n, m["illuminant"]["rgb"], rtol=0.02)
        assert ratio[1] == pytest.approx(m["illuminant"]["exposure"], rel=0.02)
        # ... and without knowing the lighting ramp, per-channel ratios still give the cast
        raw_ratio = np.median(sc.source[bg] / sc.clean[bg], axis=0)
        np.testing.assert_allclose(raw_ratio / raw_ratio[1], m["illuminant"]["rgb"], rtol=0.03)


@pytest.mark.parametrize("piece", PIECES)
def test_force_piece(piece):
    sc = render_scene(np.random.default_rng(0), SIZE, piece=piece)
    assert sc.meta["piece"] == piece


def test_force_metal_stone_background():
    for i, metal in enumerate(METALS):
        sc = render_scene(np.random.default_rng(i), SIZE, piece="band", metal=metal, defects=False)
        assert sc.meta["metal"] == metal
        if metal == "yellow_gold":
            px = sc.clean[sc.metal > 0.9]
            r, g, b = px.mean(0)
            assert r > g > b and b < 0.6 * r  # yellow, not grey
    for stone in STONES:
        sc = render_scene(np.random.default_rng(1), SIZE, piece="solitaire", stone=stone, defects=False)
        assert sc.meta["stone"] == stone
    for bg in BACKGROUNDS:
        sc = render_scene(np.random.default_rng(2), SIZE, background=bg, defects=False)
        assert sc.meta["background"] == bg
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), SIZE, piece="tiara")


def test_image_rng_spawn():
    a = image_rng(5, 3).random(4)
    b = np.random.default_rng(np.random.SeedSequence(5).spawn(4)[3]).random(4)
    np.testing.assert_array_equal(a, b)


def test_sensor_dust_repeats_across_the_shoot_and_leaves_the_rest_bit_identical():
    from models.simulator import DEFECT_NAMES, sensor_dust_gain, shoot_sensor_dust

    assert DEFECT_NAMES[5] == "sensor_dust"
    spots = shoot_sensor_dust(11, 3)
    assert spots == shoot_sensor_dust(11, 3) and len(spots) == 3
    assert shoot_sensor_dust(11, 2) == spots[:2]              # spot i does not depend on how many
    gain = sensor_dust_gain(spots, *SIZE)
    for k in range(2):
        plain, dusty = render_image(11, k, SIZE), render_image(11, k, SIZE, sensor_dust=3)
        assert np.array_equal(plain.clean, dusty.clean)       # the truth is dust-free
        far = gain == 1.0
        assert np.array_equal(plain.source[far], dusty.source[far])   # same draws: only the spots differ
        assert (dusty.defects == 5).sum() > 0 and ((dusty.defects == 5) <= (gain < 0.99)).all()
        m = dusty.meta["sensor_dust"]
        assert [round(s["px"], 3) for s in m] == [round(s["x"] * SIZE[0] - 0.5, 3) for s in spots]
        assert sum(d["kind"] == "sensor_dust" for d in dusty.meta["defects"]) == 3
        inside = (gain < 0.9) & (plain.source.min(axis=2) > 0.05)
        ratio = dusty.source[inside].mean(axis=1) / plain.source[inside].mean(axis=1)
        assert np.abs(ratio - gain[inside]).mean() < 0.02
    assert 0.05 <= min(s["strength"] for s in spots) and max(s["strength"] for s in spots) <= 0.25
    assert all(4 / 1536 <= s["r"] <= 15 / 1536 for s in spots)


# --------------------------------------------------------------------------------------
# the wide studio world (render_scene(..., world="wide"))
# --------------------------------------------------------------------------------------
WIDE_SIZE = (192, 128)


def _wide(seed, **kw):
    return render_scene(np.random.default_rng(seed), WIDE_SIZE, world="wide", **kw)


@pytest.mark.parametrize("backdrop", ["white_sweep", "grey_sweep", "colored_paper", "textured_desk", "beige_paper",
                                      "kraft_paper", "light_box", "acrylic"])
def test_wide_world_renders_every_backdrop(backdrop):
    sc = _wide(3, background=backdrop)
    assert sc.meta["world"] == "wide" and sc.meta["background"] == backdrop
    assert sc.meta["studio"]["backdrop"] == backdrop and "camera" in sc.meta["studio"]
    for a in (sc.source, sc.clean):
        assert a.shape == (WIDE_SIZE[1], WIDE_SIZE[0], 3) and a.dtype == np.float32
        assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert sc.alpha.dtype == np.float32 and 0.002 < (sc.alpha > 0.5).mean() < 0.7
    assert sc.defects.shape == sc.details.shape == sc.metal.shape == sc.alpha.shape


@pytest.mark.parametrize("piece", ["band", "solitaire", "pave", "chain", "earring", "pendant"])
def test_wide_world_pieces(piece):
    sc = _wide(4, piece=piece)
    assert sc.meta["piece"] == piece
    holes = (sc.alpha < 0.02)
    # every piece has true holes fully enclosed by metal (link gaps, ring centres, openwork, eyelets)
    n, lab = cv2.connectedComponents(holes.astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])))
    assert n - 1 > len(border), piece


def test_wide_world_openwork_styles_all_drawn_petals_open():
    # petals: large openings with a wire's width of metal between them, in the piece's own shadow
    seen, petal_holes = set(), 0
    for i in range(24):
        sc = render_scene(np.random.default_rng([12, i]), (384, 256), world="wide", piece="pendant")
        seen.add(sc.meta["pendant"]["openwork"])
        if sc.meta["pendant"]["openwork"] == "petals":
            n, _, stats, _ = cv2.connectedComponentsWithStats((sc.alpha < 0.02).astype(np.uint8), connectivity=4)
            petal_holes = max(petal_holes, int((stats[1:, cv2.CC_STAT_AREA] >= 40).sum()) - 1)
    assert seen == {"holes", "slots", "lattice", "petals"}
    assert petal_holes >= 4     # openings beside the backdrop's own component


def test_wide_world_options_all_drawn():
    seen = {"shadow": set(), "iso": set(), "jpeg": set(), "dof": False, "metal": set()}
    for i in range(40):
        sc = render_scene(np.random.default_rng([8, i]), (96, 64), world="wide")
        st = sc.meta["studio"]
        seen["shadow"].add(st["shadow"])
        seen["iso"].add(st["camera"]["iso"])
        seen["jpeg"].add("jpeg_quality" in st["camera"])
        seen["dof"] |= "dof_sigma_px" in st["camera"]
        seen["metal"].add(sc.meta["metal"])
    assert seen["shadow"] == {"none", "soft", "hard", "both"}
    assert len(seen["iso"]) >= 4 and seen["jpeg"] == {True, False} and seen["dof"]
    assert seen["metal"] == set(METALS)


def test_wide_world_deterministic_and_default_untouched():
    a, b = _wide([9, 1]), _wide([9, 1])
    for x, y in zip((a.source, a.clean, a.alpha, a.defects, a.details), (b.source, b.clean, b.alpha, b.defects,
                                                                         b.details)):
        assert np.array_equal(x, y)
    assert a.meta == b.meta
    # the wide studio draws from a child generator: the default world's stream is unchanged
    d1 = render_scene(np.random.default_rng([9, 1]), WIDE_SIZE)
    d2 = render_scene(np.random.default_rng([9, 1]), WIDE_SIZE, world="default")
    assert np.array_equal(d1.source, d2.source) and "world" not in d1.meta and not d1.layers
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), WIDE_SIZE, world="moon")


def test_wide_acrylic_reflection_is_background():
    for i in range(3):
        sc = _wide([10, i], background="acrylic", piece=["band", "pendant", "solitaire"][i])
        refl = sc.layers["reflection"]
        top = sc.meta["background_params"]["acrylic"]["top_y"]
        assert refl.max() > 0.15  # a visible mirror image of the piece
        below = refl > 0.05
        below[:top + 2] = False
        assert below.sum() > 20 and sc.alpha[below].max() == 0.0
        # the reflection really is in the picture: it darkens/colours the riser where it falls
        assert np.abs(sc.clean[below] - sc.clean[below].mean(0)).mean() > 0.003


def test_wide_hard_shadow_has_alpha_zero():
    found = 0
    for i in range(12):
        sc = _wide([11, i], background="white_sweep")
        if sc.meta["studio"]["shadow"] not in ("hard", "both"):
            continue
        found += 1
        dark = sc.layers["shadow"] > 0.25
        off_piece = dark & (sc.alpha < 0.02)
        assert off_piece.sum() > 30
        assert sc.alpha[off_piece].max() < 0.02
        # a hard shadow is a grey slab: clearly darker than the sweep next to it
        open_bg = (sc.layers["shadow"] < 0.01) & (sc.alpha == 0)
        assert sc.clean[off_piece].mean() < 0.85 * np.median(sc.clean[open_bg])
    assert found >= 2


@pytest.mark.parametrize("world", ["default", "wide"])
def test_a_clean_plate_is_the_same_set_without_the_piece(world):
    """``plate=True``: the image is the same bytes; the plate has the image's light and camera (the
    backdrop far from the piece and its shadows agrees to the noise) and no piece, shadow or reflection
    (where the piece or its hard shadow was, the plate shows the backdrop around it)."""
    checked = 0
    for i in range(6):
        rng = lambda: np.random.default_rng([14, i])  # noqa: E731
        kind = "white_sweep" if world == "wide" else None
        # without dust on the sweep (the plate has its own, anywhere): what is left of the piece shows
        plain = render_scene(rng(), WIDE_SIZE, world=world, background=kind, defects=False)
        sc = render_scene(rng(), WIDE_SIZE, world=world, background=kind, defects=False, plate=True)
        assert np.array_equal(plain.source, sc.source) and plain.meta == sc.meta
        plate = sc.layers["plate"]
        assert plate.shape == sc.source.shape and plate.dtype == np.float32
        piece = sc.alpha > 0.5
        around = cv2.dilate(piece.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
        shade = sc.layers.get("shadow", np.zeros_like(sc.alpha))
        far = ~around & (shade < 0.01)
        assert np.abs((sc.source - plate)[far].mean(0)).max() < 0.01          # the same light
        # no piece in it: where the piece was, the plate has no more detail than the open backdrop
        detail = lambda x: np.abs(x - cv2.GaussianBlur(x, (0, 0), 2.0)).mean(2)  # noqa: E731
        assert detail(plate)[piece].mean() < 1.5 * detail(plate)[far].mean() + 0.002
        assert detail(sc.source)[piece].mean() > detail(plate)[piece].mean() + 0.01    # (noise in both)
        assert not np.array_equal(sc.source[far], plate[far])                   # its own noise
        if (shade > 0.25).sum() > 30:            # a cast shadow: not in the plate
            dark = (shade > 0.25) & (cv2.dilate((sc.alpha > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0)
            if dark.sum() > 30:
                assert plate[dark].mean() > sc.source[dark].mean() + 0.03
                checked += 1
    assert world == "default" or checked >= 1
    # with defects: the light (cast, fall-off) is the image's, drawn once
    lit = render_scene(np.random.default_rng([14, 1]), WIDE_SIZE, world=world, plate=True)
    if "plate" in lit.layers:
        far = cv2.dilate((lit.alpha > 0.02).astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
        far &= lit.layers.get("shadow", np.zeros_like(lit.alpha)) < 0.01
        assert np.abs(np.median(lit.source[far], 0) - np.median(lit.layers["plate"][far], 0)).max() < 0.01
    acrylic = render_scene(np.random.default_rng([14, 0]), WIDE_SIZE, world="wide", background="acrylic", plate=True)
    assert "plate" not in acrylic.layers


def test_wide_light_box_is_near_white():
    for i in range(3):
        sc = _wide([12, i], background="light_box")
        bg = sc.clean[(sc.alpha == 0) & (sc.layers["shadow"] < 0.02)]
        assert np.median(bg) > 0.85 and np.ptp(bg.mean(0)) < 0.05  # bright and neutral
        assert sc.meta["studio"]["camera"]["exposure_push"] > 1.0


def test_wide_white_metal_on_white_mirrors_the_backdrop():
    sc = _wide(13, background="white_sweep", metal="silver", piece="band")
    assert sc.meta["lighting"]["studio"]["mirror"]["mix"] >= 0.45
    bgl = np.median(sc.clean[sc.alpha == 0])
    metal = sc.clean[(sc.metal > 0.9) & (sc.alpha > 0.99)].mean(1)
    assert np.mean(np.abs(metal - bgl) < 0.15) > 0.3  # much of the metal is as bright as the sweep


def test_wide_shoot_and_cli(tmp_path):
    from flows.cli import main as cli_main

    paths = synth_shoot(tmp_path / "a", 2, 5, size=WIDE_SIZE, formats=("jpg",), world="wide")
    m = load_truth(tmp_path / "a", paths[0].stem)["meta"]
    assert m["world"] == "wide" and "studio" in m
    assert cli_main(["synth", str(tmp_path / "b"), "--images", "2", "--seed", "5", "--size", "192x128",
                     "--formats", "jpg", "--world", "wide"]) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_only_a_jpeg_file_of_the_wide_world_carries_the_cameras_jpeg(tmp_path):
    """The wide world's camera draws a JPEG quality for half its shots; a JPEG file of the shot (and of its
    clean plate) carries that compression, a raw file or a TIFF the sensor's image: no raw file has 8 x 8
    blocks, and a shot and its plate compressed apart differ block by block where their noise differs."""
    import tifffile

    from models.simulator import studio, write_scene
    from models.simulator.scene import linear_to_srgb

    scenes = (render_scene(np.random.default_rng([7, k]), (360, 240), world="wide", plate=True) for k in range(40))
    s = next(sc for sc in scenes if "jpeg_quality" in sc.meta["studio"]["camera"] and "plate" in sc.layers)
    q = s.meta["studio"]["camera"]["jpeg_quality"]
    for plate, shot, sensor in ((False, s.source, s.layers["sensor"]), (True, s.layers["plate"], s.layers["plate_sensor"])):
        assert s.as_written("jpg", plate=plate) is shot and s.as_written("tif", plate=plate) is sensor
        assert s.as_written("dng", plate=plate) is sensor
        assert np.array_equal(studio.jpeg(sensor, q), shot) and np.abs(shot - sensor).mean() > 1e-3
    tif = tifffile.imread(write_scene(tmp_path, s, 0, "tif")) / 65535.0
    assert np.abs(tif - linear_to_srgb(s.layers["sensor"])).max() < 1e-4
    # a scene the camera did not compress has no sensor layer: every file holds its source
    plain = next(sc for sc in (render_scene(np.random.default_rng([7, k]), (360, 240), world="wide") for k in range(40))
                 if "jpeg_quality" not in sc.meta["studio"]["camera"])
    assert "sensor" not in plain.layers and plain.as_written("dng") is plain.source
