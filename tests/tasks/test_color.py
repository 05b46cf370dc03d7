"""Colour maths: CIEDE2000 (Sharma et al. 2005 test data), sRGB curves, Bradford CAT."""

import math

import numpy as np
import pytest
import torch

from tasks.color import (blackbody_rgb, bradford_adaptation, delta_e2000, kelvin_and_tint, linear_to_srgb,
                         rgb_to_lab, srgb8_to_linear, srgb_to_linear)
from helpers import DEVICES

# Sharma, Wu & Dalal (2005), Table 1: (L1, a1, b1), (L2, a2, b2), dE00.
SHARMA = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def _lab(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype).T.reshape(1, 3, len(rows), 1)


def test_ciede2000_matches_sharma_table():
    lab1 = _lab([p[0] for p in SHARMA])
    lab2 = _lab([p[1] for p in SHARMA])
    want = torch.tensor([p[2] for p in SHARMA], dtype=torch.float64)
    got = delta_e2000(lab1, lab2).flatten()
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_ciede2000_is_symmetric_and_zero_on_identity():
    lab1 = _lab([p[0] for p in SHARMA])
    lab2 = _lab([p[1] for p in SHARMA])
    assert torch.allclose(delta_e2000(lab1, lab2), delta_e2000(lab2, lab1), atol=1e-9)
    assert float(delta_e2000(lab1, lab1).abs().max()) < 1e-6


def test_ciede2000_float32_close_to_float64():
    # pairs 9-15 sit on the hue-angle discontinuity (a* = +-0.001): float32 rounding flips them
    rows = [p for i, p in enumerate(SHARMA) if not 8 <= i <= 14]
    lab1, lab2 = _lab([p[0] for p in rows]), _lab([p[1] for p in rows])
    d64 = delta_e2000(lab1, lab2)
    d32 = delta_e2000(lab1.float(), lab2.float())
    assert d32.dtype == torch.float32
    assert float((d32.double() - d64).abs().max()) < 2e-3


def test_srgb_round_trip_and_known_values():
    x = torch.linspace(0, 1, 4097, dtype=torch.float64).view(1, 1, -1, 1).expand(1, 3, -1, 1)
    assert float((linear_to_srgb(srgb_to_linear(x)) - x).abs().max()) < 1e-9
    assert float((srgb_to_linear(linear_to_srgb(x)) - x).abs().max()) < 1e-9
    # 8-bit mid-grey and the toe/linear segment boundary
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.21404, abs=1e-5)
    assert float(linear_to_srgb(torch.tensor(0.0031308))) == pytest.approx(0.04045, abs=1e-6)
    assert float(linear_to_srgb(torch.tensor(1.0))) == pytest.approx(1.0, abs=1e-7)
    # monotone
    y = linear_to_srgb(torch.linspace(0, 1, 1000))
    assert bool((y[1:] >= y[:-1]).all())


def test_float32_curves_are_within_a_few_ulps_of_the_exact_power():
    # the powers run as exp2(p * log2(x)) (3x faster than pow on a CPU); on a frame large enough to be
    # converted in slices, every value stays within ~1e-6 relative of the float64 curve
    x64 = torch.linspace(0, 1, 1 << 19, dtype=torch.float64).view(1, 1, 512, -1)
    x = x64.float()
    exact_srgb = torch.where(x64 <= 0.0031308, x64 * 12.92, 1.055 * x64 ** (1 / 2.4) - 0.055)
    exact_linear = torch.where(x64 <= 0.04045, x64 / 12.92, ((x64 + 0.055) / 1.055) ** 2.4)
    for got, exact in ((linear_to_srgb(x), exact_srgb), (srgb_to_linear(x), exact_linear)):
        assert got.dtype == torch.float32
        assert float(((got.double() - exact).abs() / exact.clamp(min=1e-4)).max()) < 1e-6

def test_lab_of_white_and_black():
    white = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    lab = rgb_to_lab(white).flatten()
    assert lab[0] == pytest.approx(100, abs=1e-3)
    assert abs(float(lab[1])) < 1e-2 and abs(float(lab[2])) < 1e-2
    assert float(rgb_to_lab(torch.zeros(1, 3, 1, 1))[0, 0]) == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("kelvin,tint", [(2800, 0.0), (3200, 0.005), (4500, -0.005), (5500, 0.0), (7500, 0.0)])
def test_bradford_maps_source_white_to_neutral(kelvin, tint):
    white = torch.tensor(blackbody_rgb(kelvin, tint), dtype=torch.float64)
    m = bradford_adaptation(white)
    out = m @ white
    # neutral: equal RGB (D65 white in linear sRGB), luminance kept
    assert float((out.max() - out.min()) / out.mean()) < 1e-3, out
    y = torch.tensor([0.2126729, 0.7151522, 0.0721750], dtype=torch.float64)
    assert float(y @ out) == pytest.approx(float(y @ white), rel=1e-4)


def test_bradford_identity_for_d65():
    m = bradford_adaptation(torch.ones(3, dtype=torch.float64))
    assert torch.allclose(m, torch.eye(3, dtype=torch.float64), atol=1e-4)


def _krystek_uv(kelvin: np.ndarray) -> np.ndarray:
    """The Planckian locus in CIE 1960 uv by Krystek's rational fit (1985), apart from the code's spline."""
    t = np.asarray(kelvin, np.float64)
    u = (0.860117757 + 1.54118254e-4 * t + 1.28641212e-7 * t * t) / (1 + 8.42420235e-4 * t + 7.08145163e-7 * t * t)
    v = (0.317398726 + 4.22806245e-5 * t + 4.20481691e-8 * t * t) / (1 - 2.89741816e-5 * t + 1.61456053e-7 * t * t)
    return np.stack([u, v], -1)


@pytest.mark.parametrize("kelvin,tint", [(2800, 0.006), (3200, -0.004), (4359, 0.0029), (4359, -0.006),
                                         (5500, 0.003), (7500, -0.006)])
def test_blackbody_tint_is_the_lights_duv(kelvin, tint):
    """A meter's Duv: the light sits ``tint`` from the locus (CIE 1960 uv) along its normal, above it
    (greener) when positive, and its nearest point on the locus is ``kelvin``'s."""
    rgb = torch.tensor(blackbody_rgb(kelvin, tint), dtype=torch.float64)
    srgb_to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = srgb_to_xyz @ rgb.numpy()
    uv = np.array([4 * xyz[0], 6 * xyz[1]]) / (xyz[0] + 15 * xyz[1] + 3 * xyz[2])
    temps = np.linspace(0.8 * kelvin, 1.2 * kelvin, 40001)
    gap = uv - _krystek_uv(temps)
    nearest = int(np.argmin(np.hypot(*gap.T)))
    assert np.hypot(*gap[nearest]) == pytest.approx(abs(tint), abs=2e-4)
    assert temps[nearest] == pytest.approx(kelvin, rel=0.01)
    assert np.sign(gap[nearest][1]) == np.sign(tint)    # above the locus is higher v: greener


@pytest.mark.parametrize("kelvin,tint", [(2000, 0.0), (2800, -0.02), (3200, 0.012), (4809, 0.004),
                                         (6500, -0.008), (9000, 0.03), (15000, -0.03)])
def test_kelvin_and_tint_read_back_the_light_blackbody_rgb_made(kelvin, tint):
    """A grey card's colour, at any exposure, names its light in blackbody_rgb's own units."""
    rgb = blackbody_rgb(kelvin, tint)
    read_k, read_t = kelvin_and_tint(tuple(0.37 * c for c in rgb))
    assert read_k == pytest.approx(kelvin, rel=1e-4)
    assert read_t == pytest.approx(tint, abs=1e-5)
    assert np.allclose(blackbody_rgb(read_k, read_t), rgb, atol=2e-4)


def test_blackbody_6504_is_near_d65():
    # the Planckian radiator at 6504 K sits just below D65 (measured log r/g 0.058)
    r, g, b = blackbody_rgb(6504)
    assert g == 1.0
    assert abs(math.log(r)) < 0.1 and abs(math.log(b)) < 0.1
    r2, _, b2 = blackbody_rgb(3000)
    assert r2 > 1.2 and b2 < 0.7  # warm light


@pytest.mark.parametrize("device", DEVICES)
def test_an_8bit_colour_is_the_same_linear_value_on_every_device(device):
    like = torch.zeros(2, device=device, dtype=torch.float32)
    white = srgb8_to_linear((255, 255, 255), like)
    assert white.shape == (1, 3, 1, 1) and white.device == like.device and bool((white == 1).all())
    grey = srgb8_to_linear((128, 64, 0), like).cpu()
    assert torch.equal(grey, srgb_to_linear(torch.tensor([128.0, 64, 0]) / 255).view(1, 3, 1, 1))
