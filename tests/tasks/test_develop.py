"""develop: transfer curve and exposure."""

import pytest
import torch
from pydantic import ValidationError

from helpers import DEVICES
from tasks.color import srgb_to_linear
from tasks.develop import DevelopParams, develop


@pytest.mark.parametrize("device", DEVICES)
def test_linear_passthrough_keeps_shape_dtype_device(device):
    g = torch.Generator().manual_seed(0)
    px = torch.rand((1, 3, 16, 24), generator=g).to(device)
    f = develop(px, "linear", DevelopParams())
    assert f.image.shape == px.shape and f.image.dtype == torch.float32 and f.image.device == px.device
    assert torch.equal(f.image, px)
    assert f.alpha is None and f.masks == {} and f.flags == ()


def test_srgb_is_decoded():
    px = torch.linspace(0, 1, 48).view(1, 3, 4, 4)
    f = develop(px, "srgb", DevelopParams())
    assert torch.allclose(f.image, srgb_to_linear(px), atol=1e-7)
    assert float(develop(torch.full((1, 3, 2, 2), 0.5), "srgb", DevelopParams()).image[0, 0, 0, 0]) == pytest.approx(0.2140, abs=1e-4)


def test_exposure_in_linear_light_and_clamped():
    px = torch.full((1, 3, 4, 4), 0.2)
    assert torch.allclose(develop(px, "linear", DevelopParams(exposure_ev=1)).image, torch.full_like(px, 0.4))
    assert torch.allclose(develop(px, "linear", DevelopParams(exposure_ev=-2)).image, torch.full_like(px, 0.05))
    out = develop(px, "linear", DevelopParams(exposure_ev=3)).image
    assert float(out.max()) == 1.0 and float(out.min()) >= 0


def test_input_not_modified_and_unknown_transfer_rejected():
    px = torch.full((1, 3, 4, 4), 0.3)
    before = px.clone()
    develop(px, "srgb", DevelopParams(exposure_ev=1))
    assert torch.equal(px, before)
    with pytest.raises(ValueError, match="transfer"):
        develop(px, "gamma22", DevelopParams())


def test_params_validated():
    with pytest.raises(ValidationError):
        DevelopParams(exposure_ev=5)
    with pytest.raises(ValidationError):
        DevelopParams(bogus=1)
