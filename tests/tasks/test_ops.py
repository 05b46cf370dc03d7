"""tasks.ops: the OpenCV path a CPU takes gives what the torch path (CUDA's, and autograd's) gives."""

from __future__ import annotations

import pytest
import torch

import tasks.ops as ops


def _torch_path(monkeypatch, f, *args):
    with monkeypatch.context() as m:
        m.setattr(ops, "_opencv_can", lambda x: False)
        return f(*args)


@pytest.mark.parametrize("name, f, args", [
    ("blur 1", ops.gaussian_blur, (1.0,)), ("blur 24", ops.gaussian_blur, (24.0,)),
    ("box 5", ops.box_mean, (5,)), ("dilate 12", ops.dilate, (12,)), ("erode 3", ops.erode, (3,)),
    ("halve", ops.halve, ()), ("grow 2x", ops.resize, ((240, 340),)),
    ("grow odd", ops.resize, ((413, 229),)),
])
def test_opencv_and_torch_agree(monkeypatch, name, f, args):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 120, 170)
    fast, slow = f(x, *args), _torch_path(monkeypatch, f, x, *args)
    assert ops._opencv_can(x) and fast.shape == slow.shape and fast.dtype == slow.dtype
    # OpenCV's bilinear weights at an odd ratio round differently: within 2e-5 (2x exactly: 1e-7)
    assert float((fast - slow).abs().max()) < (2e-5 if name == "grow odd" else 2e-6), name


def test_halving_an_odd_frame_averages_its_last_row_and_column_alone(monkeypatch):
    x = torch.rand(1, 3, 61, 91)
    fast, slow = ops.halve(x), _torch_path(monkeypatch, ops.halve, x)
    assert fast.shape == slow.shape == (1, 3, 31, 46)
    assert float((fast - slow).abs().max()) < 1e-6
    assert torch.allclose(fast[..., -1, -1], x[..., -1, -1])


def test_autograd_and_other_dtypes_keep_the_torch_path():
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    assert not ops._opencv_can(x) and not ops._opencv_can(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    ops.gaussian_blur(x, 2.0).sum().backward()
    assert x.grad is not None


def test_resize_at_reads_the_resized_image_on_a_box():
    from tasks.ops import resize, resize_at

    small = torch.rand(1, 3, 24, 36)
    for size, rows, cols in (((400, 600), slice(10, 200), slice(0, 600)),
                             ((4000, 6000), slice(3000, 4000), slice(17, 933)),
                             ((20, 30), slice(2, 9), slice(0, 30))):   # the last one shrinks: area filter
        assert torch.allclose(resize_at(small, size, rows, cols), resize(small, size)[..., rows, cols], atol=1e-5)


def _push_pull(image, hole, levels=12):
    """fill_holes' definition, every level in the general form (Gortler et al. 1996)."""
    import torch.nn.functional as F

    known = 1.0 - hole.clamp(0, 1)
    pyramid = [(image * known, known)]
    for _ in range(levels):
        v, w = pyramid[-1]
        if min(v.shape[-2:]) < 2:
            break
        pyramid.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    v, w = pyramid[-1]
    filled = v / w.clamp(min=1e-6)
    for v, w in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        wn = w.clamp(max=1e-3) * 1e3
        filled = wn * v / w.clamp(min=1e-6) + (1 - wn) * up
    return image * known + filled * (1 - known)


def _image_and_hole(seed: int, binary: bool):
    """A 61 x 90 (odd-sized) image with scattered holes and one large one; soft (0.7) unless ``binary``."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 61, 90, generator=g)
    hole = (torch.rand(1, 1, 61, 90, generator=g) > 0.6).float()
    hole[..., 10:40, 20:70] = 1
    return image, hole if binary else hole * 0.7


@pytest.mark.parametrize("binary", [True, False])
def test_fill_holes_shortcut_for_binary_holes_gives_the_definition(binary):
    image, hole = _image_and_hole(3, binary)
    # within float rounding: on a CPU the pyramid's pooling and upsampling run through OpenCV
    assert torch.allclose(ops.fill_holes(image, hole), _push_pull(image, hole), atol=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_fill_holes_on_a_box_reads_the_whole_frame_and_gives_its_part(binary):
    """The fill is not local (a hole's coarse levels see the whole frame): the box's part of the result
    is the same, and a box at the frame's edge and an odd-sized frame too."""
    image, hole = _image_and_hole(5, binary)
    for box in ((slice(12, 33), slice(25, 80)), (slice(0, 61), slice(0, 17)), (slice(50, 61), slice(81, 90))):
        part = ops.fill_holes(image, hole, box=box)
        assert torch.allclose(part, _push_pull(image, hole)[..., box[0], box[1]], atol=1e-5)


def test_fill_holes_of_a_bool_hole_is_the_fill_of_its_0s_and_1s_to_the_bit():
    image, hole = _image_and_hole(7, True)
    box = (slice(12, 33), slice(25, 80))
    assert torch.equal(ops.fill_holes(image, hole > 0.5), ops.fill_holes(image, hole))
    assert torch.equal(ops.fill_holes(image, hole > 0.5, box=box), ops.fill_holes(image, hole, box=box))


@pytest.mark.parametrize("shape", [(1,), (2,), (999,), (3, 100_001)])
def test_quantiles_are_torch_s_to_the_bit_from_a_partial_sort(shape):
    g = torch.Generator().manual_seed(3)
    values = torch.rand(shape, generator=g) * torch.randn(shape, generator=g)
    for qs in ((0.5,), (0.05, 0.5, 0.95), (0.9,), (0.0, 1.0), (0.333,)):
        assert torch.equal(ops.quantiles(values, qs), torch.quantile(values, torch.tensor(qs), dim=-1))
    values[..., 0] = float("nan")     # NaN makes every quantile NaN, as torch's does
    assert ops.quantiles(values, (0.5,)).isnan().all()


def test_shrunk_size_brings_the_long_edge_down_and_never_grows():
    assert ops.shrunk_size((4000, 6000), 3000) == (2000, 3000)
    assert ops.shrunk_size((3872, 3872), 3000) == (3000, 3000)
    assert ops.shrunk_size((800, 1200), 3000) == (800, 1200)
    assert ops.shrunk_size((10, 6000), 2000, smallest=8) == (8, 2000)


@pytest.mark.parametrize("k", [2, 3])
def test_a_pyramid_level_of_a_box_is_the_same_box_of_the_frames_level(k):
    """``shrunk_by``: a box whose corners are multiples of k shrinks to the pixels the whole frame's level
    has there; the last, partial blocks average what they hold; a bool mask becomes its share of True."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, 61, 92)
    level = ops.shrunk_by(x, k)
    assert level.shape[-2:] == (-(-61 // k), -(-92 // k))
    assert torch.allclose(ops.shrunk_by(x[..., 2 * k:8 * k, k:12 * k], k), level[..., 2:8, 1:12], atol=1e-6)
    assert torch.allclose(level[..., -1, -1], x[..., 60 // k * k:, 91 // k * k:].mean((-2, -1)), atol=1e-6)
    mask = torch.zeros(1, 1, 6 * k, 6 * k, dtype=torch.bool)
    mask[..., :k, :1] = True
    assert float(ops.shrunk_by(mask, k)[0, 0, 0, 0]) == pytest.approx(1 / k)
    assert ops.shrunk_by(x, 1) is x


def test_a_masked_blur_reads_only_what_its_weight_covers():
    """``masked_blur``: a flat value under the mask comes back flat up to the mask's edge, whatever lies
    beyond it (the backdrop does not bleed in); the weight read is the mask's blur; where the window reads
    none of the mask, the mean is 0."""
    x = torch.full((1, 3, 40, 60), 5.0)
    x[..., :, 30:] = 100.0                  # beyond the mask
    mask = torch.zeros(1, 1, 40, 60)
    mask[..., :, :30] = 1.0
    mean, read = ops.masked_blur(x, mask, 2.0)
    assert torch.allclose(mean[..., :, :30], torch.full_like(mean[..., :, :30], 5.0), atol=1e-4)
    assert torch.allclose(read, ops.gaussian_blur(mask, 2.0))
    assert float(mean[..., :, 50:].abs().max()) == 0.0
