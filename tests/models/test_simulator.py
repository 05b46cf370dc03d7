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
