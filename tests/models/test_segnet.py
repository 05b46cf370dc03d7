"""Tests for the shipped SegNet weights (models.segnet). Fast: a few small frames on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.segnet import DEFAULT_WEIGHTS, SegNet, load_segnet, piece_probability
from models.simulator import linear_to_srgb, render_scene

# held-out textured_desk scenes: seeds disjoint from training (SeedSequence([seed, i, 0x5E6]))
# and from validation (default_rng([2024, b, i])).
TEST_SEEDS = [(31337, i) for i in range(5)]
# mean IoU measured on these scenes with the shipped weights (see TRAINING.md), minus a margin
MEASURED_IOU = 0.895
IOU_BAR = MEASURED_IOU - 0.05


@pytest.fixture(scope="module")
def net() -> SegNet:
    return load_segnet()


@pytest.fixture(scope="module")
def desk_scenes():
    return [render_scene(np.random.default_rng(list(s)), (384, 256), background="textured_desk")
            for s in TEST_SEEDS]


def _srgb(scene) -> torch.Tensor:
    return torch.from_numpy(linear_to_srgb(scene.source)).permute(2, 0, 1)[None].float()


def test_weights_load_small_and_cached(net):
    assert DEFAULT_WEIGHTS.stat().st_size < 3 * 1024 * 1024
    assert not net.training
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert load_segnet() is net
    assert load_segnet(str(DEFAULT_WEIGHTS)) is net


def test_missing_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.segnet.train"):
        load_segnet(tmp_path / "nope.pt")


@pytest.mark.parametrize("shape,dtype", [((1, 3, 200, 300), torch.float32), ((2, 3, 97, 61), torch.float64),
                                         ((1, 3, 512, 768), torch.float32)])
def test_output_shape_dtype_range(net, shape, dtype):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    p = piece_probability(x, net)
    assert p.shape == (shape[0], 1, shape[2], shape[3])
    assert p.dtype == dtype and p.device == x.device
    assert torch.isfinite(p).all() and p.min() >= 0 and p.max() <= 1


def test_deterministic(net, desk_scenes):
    x = _srgb(desk_scenes[0])
    a = piece_probability(x, net)
    b = piece_probability(x.clone(), net)
    assert torch.equal(a, b)


def test_iou_on_held_out_desk_scenes(net, desk_scenes):
    x = torch.cat([_srgb(s) for s in desk_scenes])
    p = piece_probability(x, net)[:, 0].numpy() > 0.5
    ious = []
    for pred, s in zip(p, desk_scenes):
        t = s.alpha > 0.5
        ious.append(np.logical_and(pred, t).sum() / np.logical_or(pred, t).sum())
    assert float(np.mean(ious)) > IOU_BAR, ious
    assert min(ious) > IOU_BAR - 0.15, ious


def test_photometric_augmentation_changes_the_whole_crop_alike_and_leaves_the_target():
    """``--photometric``: another camera's exposure, white balance and tone over piece and backdrop
    alike; the target is only cropped and flipped as before, and values stay in [0, 1]."""
    from models.segnet.train import augment, dihedral, photometric

    rng = np.random.default_rng(0)
    img = (rng.random((6, 64, 64, 3)) * 255).astype(np.uint8)
    alpha = (rng.random((6, 64, 64)) * 255).astype(np.uint8)   # no symmetry: the target tells its flips
    for i in range(6):  # one image a batch: its crop is drawn before the photometric draws, its flips after
        (x,), (t,) = augment(img[i:i + 1], alpha[i:i + 1], 48, torch.Generator().manual_seed(i))
        (xj,), (tj,) = augment(img[i:i + 1], alpha[i:i + 1], 48, torch.Generator().manual_seed(i), photo=1.0)
        flips = [torch.tensor(r, dtype=torch.float32) for r in np.ndindex(2, 2, 2)
                 if torch.equal(dihedral(t, t, torch.tensor(r, dtype=torch.float32))[1], tj)]
        assert len(flips) == 1                      # the same crop, only flipped
        same_place = dihedral(x, t, flips[0])[0]    # the plain crop with the jittered one's flips
        assert xj.min() >= 0 and xj.max() <= 1
        assert (same_place - xj).abs().mean() > 0.01
    g = torch.Generator().manual_seed(5)
    shifts = [photometric(torch.full((3, 8, 8), 0.5), g).mean() for _ in range(40)]
    assert max(shifts) - min(shifts) > 0.1      # exposures differ from draw to draw


def test_the_loss_can_weight_a_pieces_openings():
    """``--opening-weight``: the background a piece nearly closes around (a ring's inside, a link's gap)
    weighs more, so filling it costs more; the background outside the piece does not."""
    from models.segnet.train import loss_fn, openings

    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r = ((y - 32) ** 2 + (x - 32) ** 2).sqrt()[None, None]
    ring = ((r >= 6) & (r <= 12)).float()
    inside = openings(ring)
    assert bool(inside[r < 5].all()) and not bool(inside[r > 13].any()) and not bool(inside[ring > 0].any())
    exact, filled = 8 * (2 * ring - 1), 8 * (2 * (r <= 12).float() - 1)     # logits: right, or the hole filled
    cost = [float(loss_fn(filled, ring, w) - loss_fn(exact, ring, w)) for w in (0.0, 3.0)]
    assert cost[1] > 1.5 * cost[0] > 0


def test_training_pool_is_remade_when_the_code_that_renders_it_changes(tmp_path):
    """A pool is cached under a digest of the simulator and the sample-making code: the same code
    loads it back, changed code renders a new one (a world change used to train on the old pool)."""
    import importlib.util

    from models.segnet import train

    maker = tmp_path / "maker.py"
    maker.write_text("SCALE = 1\n")
    spec = importlib.util.spec_from_file_location("maker", maker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = []

    def make():
        made.append(1)
        return {"kind": np.array(["a"] * len(made)), "image": np.zeros((len(made), 2, 2, 3), np.uint8)}

    path = tmp_path / "pool.npz"
    first = train.cached_pool(path, make, "samples", modules=(module,))
    again = train.cached_pool(path, make, "samples", modules=(module,))
    assert len(made) == 1 and np.array_equal(first["kind"], again["kind"])
    before = train.render_code_digest(module)
    maker.write_text("SCALE = 2\n")
    assert train.render_code_digest(module) != before
    changed = train.cached_pool(path, make, "samples", modules=(module,))
    assert len(made) == 2 and len(changed["kind"]) == 2
    assert len(list(tmp_path.glob("pool_code*.npz"))) == 2


def _target_untouched(crop: torch.Tensor, matte: torch.Tensor, share: str) -> bool:
    """``augment`` with the effect ``share`` always on gives the same crop of the target as with it off
    (the target's flips are drawn after the effect's draws, so the two may differ by a flip)."""
    from models.segnet.train import augment, dihedral

    img = (crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[None]
    alpha = (matte[0].numpy() * 255).astype(np.uint8)[None]
    (_, (t0,)), (_, (t1,)) = (augment(img, alpha, 64, torch.Generator().manual_seed(3), **{share: p}) for p in (0.0, 1.0))
    return any(torch.equal(dihedral(t0, t0, torch.tensor(r, dtype=torch.float32))[1], t1) for r in np.ndindex(2, 2, 2))


def test_a_cast_shadow_darkens_the_backdrop_beside_the_piece_by_one_factor_and_leaves_the_piece():
    """``--cast-shadow``: the piece's own outline moved aside darkens the backdrop it falls on (an umbra:
    one factor, the backdrop's colour kept within a fill light's tint); the piece that casts it and the
    backdrop away from it keep their values, and the target is not touched (the shadow is background)."""
    from models.segnet.train import cast_shadow

    y, x = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    disc = (((y - 48) ** 2 + (x - 48) ** 2) <= 15 ** 2).float()[None]
    backdrop = torch.tensor([0.8, 0.7, 0.6]).view(3, 1, 1).expand(3, 96, 96)
    crop = backdrop * (1 - disc) + 0.3 * disc
    darkened = 0
    for seed in range(8):
        shaded = cast_shadow(crop, disc, torch.Generator().manual_seed(seed))
        assert torch.equal(shaded[:, disc[0] > 0], crop[:, disc[0] > 0])         # the piece is not in its shadow
        assert torch.equal(shaded[:, :3, :3], crop[:, :3, :3])                    # far from it, nothing moves
        ratio = shaded / crop
        umbra = ratio[0] < 0.95
        darkened += int(umbra.sum())
        if umbra.sum() > 20:
            deepest = ratio[:, ratio[0] <= ratio[0].min() + 1e-4]
            assert float(deepest.max() - deepest.min()) < 0.1          # one factor on every channel, give or take a tint
    assert darkened > 8 * 100
    assert _target_untouched(crop, disc, "shadow")


def test_mirror_metal_repaints_only_the_piece_as_a_picture_of_a_studio():
    """``--mirror-metal``: the piece's faces become a reflection of lights and flags (bright and dark
    faces with crisp edges), tinted by its own colour; the backdrop keeps every value, the values stay in
    [0, 1], and the target is not touched."""
    from models.segnet.train import mirror_metal

    y, x = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    r = ((y - 48) ** 2 + (x - 48) ** 2).sqrt()
    band = ((r >= 18) & (r <= 34)).float()[None]
    crop = torch.tensor([0.9, 0.9, 0.88]).view(3, 1, 1) * (1 - band) + torch.tensor([0.8, 0.6, 0.3]).view(3, 1, 1) * band
    spreads = []
    for seed in range(6):
        shiny = mirror_metal(crop, band, torch.Generator().manual_seed(seed))
        assert torch.equal(shiny[:, band[0] == 0], crop[:, band[0] == 0])
        assert shiny.min() >= 0 and shiny.max() <= 1
        face = shiny[:, band[0] > 0]
        assert bool((face[0] >= face[2]).all())                  # the gold's tint kept: red over blue
        spreads.append(float(face[0].quantile(0.95) - face[0].quantile(0.05)))
    assert max(spreads) > 0.3                                    # lights and flags: bright and dark faces
    assert _target_untouched(crop, band, "mirror")
