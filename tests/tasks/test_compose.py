"""compose: canvas variants and quantisation."""

import numpy as np
import pytest
import torch

from helpers import DEVICES
from tasks.compose import on_canvas, piece_box, quantize


def _piece(device="cpu"):
    img = torch.full((1, 3, 120, 200), 1.0, device=device)
    alpha = torch.zeros((1, 1, 120, 200), device=device)
    alpha[..., 10:50, 120:180] = 1  # off-centre, 40 x 60
    img[..., 10:50, 120:180] = torch.tensor([0.6, 0.4, 0.1], device=device).view(1, 3, 1, 1)
    return img, alpha


def test_piece_box():
    _, alpha = _piece()
    assert piece_box(alpha) == (10, 50, 120, 180)
    assert piece_box(torch.zeros((1, 1, 7, 9))) == (0, 7, 0, 9)


@pytest.mark.parametrize("device", DEVICES)
def test_on_canvas_centres_piece(device):
    img, alpha = _piece(device)
    backdrop = torch.ones(3, device=device)
    comp, none = on_canvas(img, alpha, 256, 0.1, backdrop)
    colour, a = on_canvas(img, alpha, 256, 0.1, backdrop, transparent=True)
    assert none is None     # an opaque canvas has no alpha to hand over
    assert comp.shape == (1, 3, 256, 256) and a.shape == (1, 1, 256, 256) and colour.shape == (1, 3, 256, 256)
    assert comp.device == img.device and comp.dtype == torch.float32
    top, bottom, left, right = piece_box(a, 0.5)
    # long edge fits size * (1 - 2 margin) = 205 px; aspect kept (60:40 -> 205:137)
    assert right - left == pytest.approx(205, abs=1) and bottom - top == pytest.approx(137, abs=1)
    assert abs((top + bottom) / 2 - 128) <= 1 and abs((left + right) / 2 - 128) <= 1
    # corners are exactly the backdrop
    for y, x in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert torch.equal(comp[0, :, y, x], backdrop)
        assert float(a[0, 0, y, x]) == 0 and not bool(colour[0, :, y, x].any())   # nothing of the piece: no colour
    # piece colour kept in the middle
    assert torch.allclose(comp[0, :, 128, 128], torch.tensor([0.6, 0.4, 0.1], device=device), atol=1e-5)
    assert torch.allclose(colour[0, :, 128, 128], torch.tensor([0.6, 0.4, 0.1], device=device), atol=1e-5)


def test_on_canvas_backdrop_colour_and_no_bleed():
    yy, xx = torch.meshgrid(torch.arange(120.0), torch.arange(200.0), indexing="ij")
    alpha = ((40.5 - ((yy - 60) ** 2 + (xx - 90) ** 2).sqrt()).clamp(0, 1))[None, None]  # soft disc
    img = torch.zeros((1, 3, 120, 200))  # black backdrop in the source must not bleed into edges
    img[:, :, alpha[0, 0] > 0] = torch.tensor([0.6, 0.4, 0.1]).view(3, 1)
    backdrop = torch.tensor([0.2, 0.5, 0.9])
    comp, _ = on_canvas(img, alpha, 50, 0.05, backdrop)
    colour, a = on_canvas(img, alpha, 50, 0.05, backdrop, transparent=True)
    assert torch.equal(comp[0, :, 0, 0], backdrop)
    edge = (a > 0.05) & (a < 0.95)
    assert bool(edge.any())
    piece_rgb = torch.tensor([0.6, 0.4, 0.1]).view(3, 1)
    assert torch.allclose(colour[0][:, edge[0, 0]], piece_rgb.expand(3, int(edge.sum())), atol=1e-4)


@pytest.mark.parametrize("bits,top,dtype", [(8, 255, np.uint8), (16, 65535, np.uint16)])
def test_quantize_white_black_and_alpha(bits, top, dtype):
    img = torch.zeros((1, 3, 4, 4))
    img[..., :2, :] = 1.0
    img[..., 3, 3] = 0.2140  # sRGB ~0.5
    alpha = torch.ones((1, 1, 4, 4))
    alpha[..., 0, 0] = 0
    arr = quantize(img, None, bits)
    assert arr.dtype == dtype and arr.shape == (4, 4, 3)
    assert (arr[:2] == top).all() and (arr[2] == 0).all()
    assert abs(int(arr[3, 3, 0]) - top * 0.5) <= top * 0.002
    rgba = quantize(img, alpha, bits)
    assert rgba.shape == (4, 4, 4) and rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == top
    # a fully transparent pixel carries no colour; every other keeps its own
    assert (rgba[0, 0] == 0).all() and (rgba[..., :3].reshape(-1, 3)[1:] == arr.reshape(-1, 3)[1:]).all()


def test_quantize_near_white_rounds_to_white_and_clamps():
    img = torch.full((1, 3, 2, 2), 0.9999)
    img[..., 1, 1] = 1.5
    assert (quantize(img, None, 8) == 255).all()
    assert (quantize(torch.full((1, 3, 2, 2), -0.1), None, 16) == 0).all()


@pytest.mark.parametrize("bits", [8, 16])
def test_quantize_takes_the_plain_backdrop_s_one_code_and_curves_only_the_piece(bits):
    """Bands of rows go through the curve only between the first and last column where the image varies
    (or, cut out, where alpha is above 0): the codes of every pixel through the curve. (Within a code:
    the vectorised curve can differ by a float32 ulp with a value's place in its slice, as it did
    between bands of rows before.)"""
    from tasks.compose import _codes

    g = torch.Generator().manual_seed(0)
    h, w = 3000, 700      # several bands of rows
    img = torch.full((1, 3, h, w), 1.0)                    # a white backdrop ...
    img[..., 400:2600, 150:500] = torch.rand((1, 3, 2200, 350), generator=g)   # ... a piece on it
    img[..., 2900:, :] = 0.25                              # a grey band: plain, but not the first pixel's colour
    img[..., 10, 690] = 0.5                                 # a speck at the edge of a plain band
    alpha = torch.zeros((1, 1, h, w))
    alpha[..., 380:2620, 140:510] = torch.rand((1, 1, 2240, 370), generator=g)
    alpha[..., 900, 5] = 1e-6                               # a faint pixel far off the piece: its code is 0
    top = 255 if bits == 8 else 65535
    for a in (None, alpha):
        got, every = quantize(img, a, bits).astype(np.int64), _codes(img, a, top).astype(np.int64)
        assert np.abs(got - every).max() <= 1 and (got != every).mean() < 1e-5
    plain = quantize(img, None, bits)
    assert (plain[11:400] == top).all() and (plain[10, :690] == top).all() and plain[10, 690, 0] < top
    assert (plain[2900:] == plain[2900, 0]).all()
    cut = quantize(img, alpha, bits)
    assert (cut[:380] == 0).all() and (cut[900, 5] == 0).all() and cut[1000, 200, 3] > 0
    assert (quantize(img, torch.zeros_like(alpha), bits) == 0).all()
