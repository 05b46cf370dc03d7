"""Export encoders keep transparency and exact white."""

import io

import numpy as np
import pytest
from PIL import Image

from infra.imageio import encode


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_export_keeps_alpha(fmt):
    px = np.zeros((64, 64, 4), np.uint8)
    px[16:48, 16:48] = (200, 170, 60, 255)  # an opaque gold square on full transparency
    im = Image.open(io.BytesIO(encode(px, fmt, quality=92)))
    assert im.mode == "RGBA"
    alpha = np.asarray(im)[..., 3]
    assert (alpha[:8] == 0).all() and (alpha[20:44, 20:44] == 255).all()


def test_white_jpeg_backdrop_decodes_exactly_white():
    px = np.full((64, 64, 3), 255, np.uint8)
    px[24:40, 24:40] = (120, 100, 40)
    out = np.asarray(Image.open(io.BytesIO(encode(px, "jpeg", quality=92))))
    assert (out[:16] == 255).all() and (out[:, :16] == 255).all()
