"""Tests for the validation-family generator (bench/valworld.py). Fast: small frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.valworld import FAMILIES, PIECES, cast_gains, main, render, render_plate, shoot_setup, write_shoot
from tasks.color import blackbody_rgb

SIZE = (300, 200)


def _holes(alpha: np.ndarray) -> np.ndarray:
    """alpha < 0.5 regions not connected to the frame border (enclosed by the piece)."""
    bg = (alpha < 0.5).astype(np.uint8)
    n, lab = cv2.connectedComponents(bg, connectivity=4)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return (lab > 0) & ~np.isin(lab, border)


@pytest.mark.parametrize("kelvin,duv", [(2900, 0.005), (4359, -0.0029), (6800, 0.006)])
def test_the_familys_light_is_the_one_its_meta_names_to_loupe(kelvin, duv):
    """The studio shoots give Loupe the meta's kelvin and tint: the generator's own Planckian fit
    (Krystek) and Duv must be the light Loupe's (Kim's spline) makes of them, within 1.5%."""
    gen = cast_gains(kelvin, duv)
    loupe = np.array(blackbody_rgb(kelvin, duv))
    assert np.abs(np.log(gen / gen[1]) - np.log(loupe)).max() < 0.015


def test_deterministic_per_seed_and_index():
    a, b = render(3, 5, SIZE), render(3, 5, SIZE)
    for f in ("source", "clean", "alpha", "defects", "details", "metal"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.meta == b.meta
    c = render(3, 6, SIZE)
    assert not np.array_equal(a.source, c.source)
    assert a.meta["generator"] == "valworld" and a.meta["seed"] == 3 and a.meta["index"] == 5


def test_every_family_and_piece_renders():
    for fam in FAMILIES:
        for piece in PIECES:
            sc = render(1, 0, SIZE, family=fam, piece=piece)
            assert sc.meta["family"] == fam and sc.meta["piece"] == piece
            assert sc.source.shape == (200, 300, 3) and sc.source.dtype == np.float32
            assert sc.clean.shape == (200, 300, 3) and sc.alpha.shape == (200, 300)
            assert 0 <= sc.source.min() and sc.source.max() <= 1 and 0 <= sc.clean.min() and sc.clean.max() <= 1
            assert sc.alpha.max() > 0.99, (fam, piece)
            assert set(np.unique(sc.defects)) <= {0, 1, 2}
            assert set(np.unique(sc.details)) <= set(range(8))
            assert sc.meta["lighting"]["shadow"] in ("soft", "hard")
            assert sc.meta["iso"] in (100, 400, 1600, 3200) and sc.meta["jpeg_quality"] in (75, 85, 92, 98)


def test_chains_and_pendants_have_real_holes():
    for piece in ("chain", "pendant"):
        found = 0
        for i in range(3):
            sc = render(4, i, (600, 400), piece=piece)
            holes = _holes(sc.alpha)
            assert holes.any(), (piece, i)
            assert (sc.alpha[holes] < 0.5).all()
            # a hole is backdrop: the clean there is not the piece's colour layer
            found += int(holes.sum() > 0)
        assert found == 3
    # chain link interiors: many separate holes
    sc = render(4, 0, (1200, 800), piece="chain")
    n, _ = cv2.connectedComponents(_holes(sc.alpha).astype(np.uint8))
    assert n - 1 >= 5


def test_acrylic_reflection_is_not_piece():
    checked = 0
    for i in range(12):
        sc = render(8, i, (600, 400), family="acrylic_riser", piece="ring")
        acr = sc.meta["acrylic"]
        plate = render_plate(8, i, (600, 400), family="acrylic_riser")
        top, depth = acr["top"], acr["depth"]
        x0, x1 = acr["x"]
        flipped = sc.alpha[np.clip(2 * top - np.arange(top + 2, top + depth // 3), 0, None)][:, x0:x1]
        region = np.zeros_like(sc.alpha, bool)
        region[top + 2:top + depth // 3, x0:x1] = flipped > 0.5
        region &= sc.alpha == 0
        if region.sum() < 30:
            continue
        assert (sc.alpha[region] == 0).all()
        diff = np.abs(sc.clean[region] - plate.clean[region]).mean()
        assert diff > 0.02  # the reflection changes the backdrop
        if sc.meta["backdrop"]["level"] > 0.7:  # white sweep: the reflection is darker
            assert sc.source[region].mean() < plate.source[region].mean()
            checked += 1
    assert checked >= 1


def test_clean_is_neutral_and_source_carries_the_cast():
    for i in range(3):
        sc = render(5, i, SIZE, family="white_sweep", kelvin=3000.0)
        far = cv2.dilate((sc.alpha > 0).astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
        far &= sc.defects == 0
        c = np.median(sc.clean[far], axis=0)
        assert abs(c[0] / c[1] - 1) < 0.01 and abs(c[2] / c[1] - 1) < 0.01, c
        s = np.median(sc.source[far], axis=0)
        assert s[0] / s[2] > 1.3, s
        assert sc.meta["lighting"]["kelvin"] == 3000.0
    sc = render(5, 0, SIZE, family="white_sweep", kelvin=6504.0)
    assert render(5, 0, SIZE, family="white_sweep").meta["piece"] == sc.meta["piece"]


def test_plate_matches_scene_light_without_piece():
    sc, pl = render(9, 2, SIZE), render_plate(9, 2, SIZE)
    assert pl.alpha.max() == 0 and pl.details.max() == 0
    assert pl.meta["lighting"] == sc.meta["lighting"] and pl.meta["family"] == sc.meta["family"]
    far = cv2.dilate((sc.alpha > 0).astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    assert np.abs(sc.clean[far] - pl.clean[far]).mean() < 0.01
    assert not np.array_equal(sc.source[far], pl.source[far])  # independent noise


def test_write_shoot_reads_back(tmp_path):
    from infra.imageio import read_source
    from models.simulator.writers import read_truth

    a = write_shoot(tmp_path / "a", 3, 21, size=SIZE, plate=True)
    b = write_shoot(tmp_path / "b", 5, 21, size=SIZE, formats=("jpg", "tif", "dng"))
    assert [p.suffix for p in a] == [".jpg", ".tif", ".dng"]
    assert len({p.stem for p in b}) == 5 and all(p.stem.startswith("V10") for p in b)
    for pa, pb in zip(a, b):  # image k does not depend on the shoot size
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes()
        ta, tb = (p.parent / "truth" / p.stem for p in (pa, pb))
        for f in ("clean.tif", "alpha.png", "details.png", "meta.json"):
            assert (ta / f).read_bytes() == (tb / f).read_bytes()
    for p in a:
        dec = read_source(p)
        assert dec.pixels.shape[:2] == (200, 300)
        t = read_truth(p.parent / "truth" / p.stem)
        assert t["clean"].shape == (200, 300, 3) and t["alpha"].shape == (200, 300)
        assert t["meta"]["stem"] == p.stem and t["meta"]["format"] == p.suffix[1:]
        assert t["meta"]["generator"] == "valworld"
    plates = sorted((tmp_path / "a").glob("*_plate.*"))
    assert [p.name for p in plates] == ["a_plate.jpg"]
    assert not (tmp_path / "a" / "truth" / "a_plate").exists()
    assert read_source(plates[0]) is not None


@pytest.mark.parametrize("fam", ["light_box", "desk"])
def test_family_forcing_and_meta_json(fam):
    import json

    sc = render(2, 1, SIZE, family=fam, metal="platinum")
    assert sc.meta["family"] == fam and sc.meta["metal"] == "platinum"
    json.dumps(sc.meta)
    with pytest.raises(ValueError):
        render(2, 1, SIZE, family="beach")


def _far(alphas, k=61):
    far = np.ones(alphas[0].shape, bool)
    for a in alphas:
        far &= cv2.dilate((a > 0).astype(np.uint8), np.ones((k, k), np.uint8)) == 0
    return far


def test_shared_setup_same_backdrop_and_light_different_pieces():
    for seed in (3, 7):
        setup = shoot_setup(seed, SIZE)
        scs = [render(seed, k, SIZE, setup=setup) for k in range(3)]
        far = _far([sc.alpha for sc in scs])
        assert far.mean() > 0.1
        for sc in scs:
            assert sc.meta["setup"] == "shared" and sc.meta["setup_params"] == scs[0].meta["setup_params"]
            for key in ("family", "backdrop", "lighting", "iso", "jpeg_quality", "dof", "studio"):
                assert sc.meta[key] == scs[0].meta[key], key
            # backdrop-only pixels of the truth: the same set under the same light
            assert np.abs(sc.clean[far] - scs[0].clean[far]).max() < 1e-4
        assert sc.meta["family"] != "acrylic_riser"
        # the pieces differ (position / kind / shape)
        assert not np.array_equal(scs[0].alpha, scs[1].alpha) and not np.array_equal(scs[1].alpha, scs[2].alpha)
        assert len({tuple(sc.meta["box"]) for sc in scs}) == 3
        # the clean plate: same size, backdrop within noise of an image's source far from its piece
        pl = render_plate(seed, 0, SIZE, setup=setup)
        assert pl.source.shape == scs[0].source.shape and pl.alpha.max() == 0
        assert pl.meta["setup_params"] == scs[0].meta["setup_params"]
        for sc in scs:
            ok = far & (sc.defects == 0)
            assert np.median(np.abs(pl.source[ok] - sc.source[ok])) < 0.02
            assert np.abs(pl.clean[ok] - sc.clean[ok]).max() < 1e-4
            assert not np.array_equal(pl.source[ok], sc.source[ok])  # independent noise
    # family forcing still works; one family per shoot; the riser is not offered
    assert shoot_setup(5, SIZE, family="paper").family == "paper"
    assert render(5, 1, SIZE, setup=shoot_setup(5, SIZE, family="desk")).meta["family"] == "desk"
    with pytest.raises(ValueError):
        shoot_setup(5, SIZE, family="acrylic_riser")
    # per-image rendering is untouched by the shared mode's existence
    assert "setup" not in render(3, 0, SIZE).meta


def test_write_shoot_shared_with_plate(tmp_path):
    from PIL import Image

    from infra.imageio import read_source
    from models.simulator.writers import read_truth

    a = write_shoot(tmp_path / "s", 3, 13, size=SIZE, formats=("jpg", "tif"), plate=True, setup="shared")
    b = write_shoot(tmp_path / "t", 2, 13, size=SIZE, formats=("jpg", "tif"), setup="shared")
    for pa, pb in zip(a, b):  # image k does not depend on the shoot size
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes()
    metas = [read_truth(p.parent / "truth" / p.stem)["meta"] for p in a]
    assert all(m["setup"] == "shared" and m["setup_params"] == metas[0]["setup_params"] for m in metas)
    plate = tmp_path / "s" / "s_plate.jpg"
    assert sorted(p.name for p in (tmp_path / "s").glob("*_plate.*")) == ["s_plate.jpg"]
    assert read_source(plate).pixels.shape[:2] == (200, 300)
    with Image.open(plate) as im_p, Image.open(a[0]) as im_a:
        assert im_p.size == im_a.size == SIZE
        assert im_p.quantization == im_a.quantization  # the images' JPEG quality
    # first format decides the plate's writer
    write_shoot(tmp_path / "u", 1, 13, size=SIZE, formats=("tif", "jpg"), plate=True, setup="shared")
    assert [p.name for p in (tmp_path / "u").glob("*_plate.*")] == ["u_plate.tif"]
    with pytest.raises(ValueError):
        write_shoot(tmp_path / "v", 1, 13, size=SIZE, setup="sometimes")
    # CLI
    main([str(tmp_path / "w"), "--images", "2", "--seed", "13", "--size", "300x200", "--setup", "shared", "--plate"])
    assert (tmp_path / "w" / "w_plate.jpg").exists()
    assert (tmp_path / "w" / a[0].name).read_bytes() == a[0].read_bytes()
