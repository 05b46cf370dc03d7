"""background: exact target colour outside the piece, piece and alpha kept."""

import pytest
import torch
from pydantic import ValidationError

from helpers import DEVICES
from tasks.background import BackgroundParams, replace_background
from tasks.color import srgb_to_linear
from tasks.frame import Frame


def _frame(device="cpu"):
    g = torch.Generator().manual_seed(3)
    img = (0.2 + 0.6 * torch.rand((1, 3, 60, 80), generator=g)).to(device)
    alpha = torch.zeros((1, 1, 60, 80), device=device)
    alpha[..., 20:40, 25:55] = 1
    alpha[..., 19, 25:55] = 0.5  # soft top edge
    alpha[..., 41, 25:55] = 0.3 / 255  # near-zero noise: snapped to 0
    alpha[..., 30, 24] = 254.8 / 255  # near-one: snapped to 1
    return Frame(img, alpha=alpha)


@pytest.mark.parametrize("device", DEVICES)
def test_white_is_exact_outside_piece(device):
    f = _frame(device)
    out = replace_background(f, BackgroundParams(mode="white"))
    bg = out.alpha == 0
    assert bool((out.image.expand(1, 3, -1, -1)[bg.expand(1, 3, -1, -1)] == 1.0).all())
    assert float(bg.float().mean()) > 0.8 and bool(bg[0, 0, 41, 30])
    inside = f.alpha == 1
    assert torch.equal(out.image[inside.expand_as(out.image)], f.image[inside.expand_as(f.image)])
    assert torch.equal(out.foreground, f.image)
    assert out.image.device == f.image.device and out.image.shape == f.image.shape
    assert float(out.alpha[0, 0, 30, 24]) == 1.0
    # soft edge is the linear-light mix
    want = 0.5 * f.image[..., 19, 30] + 0.5
    assert torch.allclose(out.image[..., 19, 30], want, atol=1e-6)


def test_composite_is_the_linear_mix_everywhere():
    """The mix is made on the matte's box only; everywhere it equals alpha * image + (1 - alpha) * colour."""
    f = _frame()
    out = replace_background(f, BackgroundParams(mode="color", color=(30, 200, 120)))
    colour = srgb_to_linear(torch.tensor([30, 200, 120]) / 255).view(1, 3, 1, 1)
    want = out.alpha * f.image + (1 - out.alpha) * colour
    assert float((out.image - want).abs().max()) < 1e-6
    outside = (out.alpha == 0).expand_as(out.image)
    assert torch.equal(out.image[outside], colour.expand_as(out.image)[outside])
    assert float(((out.alpha > 0) & (out.alpha < 1)).sum()) > 0     # the soft edge is part of the check


def test_transparent_keeps_alpha_and_foreground():
    f = _frame()
    out = replace_background(f, BackgroundParams(mode="transparent"))
    snapped = f.alpha.clone()
    snapped[snapped < 0.5 / 255] = 0
    snapped[snapped > 254.5 / 255] = 1
    assert torch.equal(out.alpha, snapped)
    assert torch.equal(out.foreground, f.image)
    assert torch.equal(f.alpha[0, 0, 41, 30:32], torch.full((2,), 0.3 / 255))  # input untouched


def test_color_mode_gives_the_colour():
    f = _frame()
    out = replace_background(f, BackgroundParams(mode="color", color=(200, 40, 90)))
    want = srgb_to_linear(torch.tensor([200, 40, 90]) / 255)
    bg = (out.alpha == 0)[0, 0]
    assert torch.allclose(out.image[0][:, bg].T, want.expand(int(bg.sum()), 3), atol=1e-7)


def test_shadow_only_darkens_backdrop():
    f = _frame()
    plain = replace_background(f, BackgroundParams(mode="white"))
    shaded = replace_background(f, BackgroundParams(mode="white", shadow=True, shadow_opacity=0.4))
    assert bool((shaded.image <= plain.image + 1e-7).all())
    bg = (plain.alpha == 0).expand_as(plain.image)
    darker = (plain.image - shaded.image)[bg]
    assert float(darker.max()) > 0.05 and float(darker.max()) <= 0.4 + 1e-6
    # below the piece more than above it (shadow is cast downwards)
    assert float((plain.image - shaded.image)[..., 43, 40].mean()) > float((plain.image - shaded.image)[..., 16, 40].mean())
    inside = (plain.alpha == 1).expand_as(plain.image)
    assert torch.equal(shaded.image[inside], plain.image[inside])


def test_no_alpha_flags_and_leaves_image():
    f = Frame(torch.full((1, 3, 8, 8), 0.4))
    out = replace_background(f, BackgroundParams())
    assert "mask_suspect" in out.flags and torch.equal(out.image, f.image)


def test_params_validated():
    with pytest.raises(ValidationError):
        BackgroundParams(mode="black")
    with pytest.raises(ValidationError):
        BackgroundParams(shadow_opacity=2)
