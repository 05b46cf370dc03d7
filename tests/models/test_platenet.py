"""Tests for the shipped PlateNet weights (models.platenet). Fast: a few small frames on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.platenet import DEFAULT_WEIGHTS, PlateNet, load_platenet, plate_probability
from models.simulator import render_scene

# held-out scenes of the simulator's wide world, each with its clean plate: seeds disjoint from
# training (default_rng([11, i])) and from the quality bench's (default_rng([0, piece, backdrop]))
TEST_SEEDS = [(31337, i) for i in range(6)]


@pytest.fixture(scope="module")
def net() -> PlateNet:
    return load_platenet()


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(np.random.default_rng(list(s)), (600, 400), world="wide", plate=True,
                         background=("beige_paper", "white_sweep", "kraft_paper")[s[1] % 3]) for s in TEST_SEEDS]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()


def test_weights_load_small_and_cached(net):
    assert DEFAULT_WEIGHTS.stat().st_size < 3 * 1024 * 1024
    assert not net.training
    assert load_platenet() is net


def test_missing_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.platenet.train"):
        load_platenet(tmp_path / "nope.pt")


@pytest.mark.parametrize("shape,dtype", [((1, 3, 200, 300), torch.float32), ((1, 3, 97, 61), torch.float64)])
def test_output_shape_dtype_range(net, shape, dtype):
    g = torch.Generator().manual_seed(0)
    shot, plate = torch.rand(shape, generator=g).to(dtype), torch.rand(shape, generator=g).to(dtype)
    p = plate_probability(shot, plate, net)
    assert p.shape == (shape[0], 1, shape[2], shape[3]) and p.dtype == dtype
    assert torch.isfinite(p).all() and p.min() >= 0 and p.max() <= 1


def test_shot_and_plate_must_match(net):
    with pytest.raises(ValueError, match="one shape"):
        plate_probability(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 32), net)


def test_it_finds_the_piece_and_not_its_shadow(net, scenes):
    """On held-out wide-world scenes (papers and a white sweep, noise, JPEG, hard and soft shadows) the
    piece is found, and the shadow it casts on the plate's backdrop is called backdrop."""
    ious, shadow_p = [], []
    for scene in scenes:
        p = plate_probability(_tensor(scene.source), _tensor(scene.layers["plate"]), net)[0, 0].numpy()
        truth = scene.alpha > 0.5
        ious.append((truth & (p > 0.5)).sum() / (truth | (p > 0.5)).sum())
        shadow = (scene.layers["shadow"] > 0.3) & (scene.alpha < 0.01)
        if shadow.sum() > 200:
            shadow_p.append(float(p[shadow].mean()))
    assert np.mean(ious) >= 0.8, ious
    assert shadow_p and max(shadow_p) < 0.2, shadow_p


def test_photometric_training_sees_shot_and_plate_with_one_camera():
    """``--photometric``: a studio shoots the plate with the camera it shoots the piece with, so a crop's
    shot and plate get one exposure, white balance and tone (only the sensor noise is each frame's own),
    and that camera changes from crop to crop."""
    from models.platenet.train import augment
    from models.segnet.train import photometric

    g = torch.Generator().manual_seed(3)
    frame = torch.rand((3, 16, 16), generator=torch.Generator().manual_seed(4))
    pairs = [photometric(torch.stack([frame, frame]), g) for _ in range(40)]
    assert max(float((shot - plate).mean((1, 2)).abs().max()) for shot, plate in pairs) < 0.01   # noise at most
    assert np.mean([float((shot - frame).abs().mean()) > 0.02 for shot, _ in pairs]) > 0.8
    rng = np.random.default_rng(0)
    image = (rng.random((4, 40, 40, 3)) * 255).astype(np.uint8)
    alpha = (rng.random((4, 40, 40)) * 255).astype(np.uint8)
    plain, _ = augment(image, image, alpha, 32, torch.Generator().manual_seed(0), mirror=0.0)
    seen, target = augment(image, image, alpha, 32, torch.Generator().manual_seed(0), mirror=0.0, photo=1.0)
    assert seen.shape == plain.shape == (4, 6, 32, 32) and target.shape == (4, 1, 32, 32)
    assert seen.min() >= 0 and seen.max() <= 1
    assert float(seen.mean((1, 2, 3)).sub(plain.mean((1, 2, 3))).abs().max()) > 0.01


def test_a_wider_net_is_saved_and_loaded_with_its_widths(tmp_path):
    """``train.py --widths`` makes a wider U-Net; its checkpoint carries the widths, so the cut-out's
    ``plate_network_weights`` loads it as trained (the same probabilities, to float16's rounding)."""
    from models.segnet.train import save_weights

    torch.manual_seed(0)
    wide = PlateNet((24, 48, 72, 96, 144)).eval()
    path = tmp_path / "wide.pt"
    save_weights(wide, path, {})
    loaded = load_platenet(path)
    assert loaded.widths == (24, 48, 72, 96, 144)
    shot, plate = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    assert torch.allclose(plate_probability(shot, plate, loaded), plate_probability(shot, plate, wide), atol=2e-2)


def test_the_training_pool_is_keyed_by_the_sample_maker_alone():
    """The pool's cache key digests the simulator and the module that makes PlateNet's samples, which
    holds nothing else: an edit of the training loop no longer renders the 2,000 scenes again."""
    import inspect

    from models.platenet import data, train

    assert inspect.getsourcefile(train.make_sample) == inspect.getsourcefile(data)
    assert {n for n, f in vars(data).items() if inspect.isfunction(f) and f.__module__ == data.__name__} \
        == {"make_sample", "_sample", "make_pool"}
