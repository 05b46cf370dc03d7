"""Colour maths on torch tensors: transfer curves, XYZ/Lab, CIEDE2000, CAT.

All functions take channel-first tensors ``(B, 3, H, W)`` (or ``(..., 3)``
where noted) and keep the input's device and dtype.
"""

from __future__ import annotations

import math

import torch

from tasks.ops import by_rows

# IEC 61966-2-1 linear sRGB -> CIE XYZ (D65).
_RGB_TO_XYZ = [
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
]
# Bradford cone response matrix (Lam 1985, as used by ICC v4).
_BRADFORD = [
    [0.8951, 0.2664, -0.1614],
    [-0.7502, 1.7135, 0.0367],
    [0.0389, -0.0685, 1.0296],
]
D65_XYZ = (0.95047, 1.0, 1.08883)
# Relative luminance Y of linear sRGB (Rec. 709 primaries, the matrix's middle row to 4 places): every
# "how bright" in the project is weighed with these
LUMINANCE = (0.2126, 0.7152, 0.0722)


# elementwise maps on a CPU run on slices of this many values: their five temporaries stay in cache
# and never take 5 x the image (a 24 MP frame: 1.4 GB -> 5 MB; 2x faster)
_CHUNK = 1 << 18


def _elementwise(f, x: torch.Tensor) -> torch.Tensor:
    """``f(x)`` for an elementwise ``f``, slice by slice on a large CPU tensor (the same values)."""
    if x.device.type != "cpu" or x.numel() <= _CHUNK or x.requires_grad:
        return f(x)
    x = x.contiguous()
    out = torch.empty_like(x)
    flat, done = x.view(-1), out.view(-1)
    for i in range(0, flat.numel(), _CHUNK):
        done[i:i + _CHUNK] = f(flat[i:i + _CHUNK])
    return out


# The curves' powers as exp2(p * log2(x)): within a few float32 ulps of ``x ** p`` (under 1e-6 relative)
# and 1.6-2.7x faster per curve on a CPU, where torch's pow was the largest cost of the conversions (issue 13)
def _power(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.log2(x).mul_(p).exp2_()


def _to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, _power((x.clamp(min=0) + 0.055).div_(1.055), 2.4))


def _to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    curve = _power(x, 1 / 2.4).mul_(1.055).sub_(0.055)
    # the toe written over the curve's own values: one temporary less, 15-20% faster on a CPU
    return torch.where(x <= 0.0031308, x * 12.92, curve, out=curve)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve; values in [0, 1]."""
    return _elementwise(_to_linear, x)


def srgb8_to_linear(rgb: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """An 8-bit sRGB colour as linear values ``(1, 3, 1, 1)`` on ``like``'s device and dtype. Made on the
    CPU, so every device paints the same values: CUDA's float32 division rounds (1 + 0.055) / 1.055 to one
    ulp below 1, and a white backdrop must be exactly 1 (seen on an H200, issue 13)."""
    return srgb_to_linear(torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1) / 255).to(like)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Apply the sRGB transfer curve; input clamped to [0, 1]."""
    return _elementwise(_to_srgb, x)


def _apply_matrix(m: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", m, rgb)


def rgb_to_xyz(rgb: torch.Tensor) -> torch.Tensor:
    """Linear sRGB ``(B, 3, H, W)`` to CIE XYZ (D65)."""
    return _apply_matrix(rgb.new_tensor(_RGB_TO_XYZ), rgb)


def xyz_to_rgb(xyz: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(torch.linalg.inv(xyz.new_tensor(_RGB_TO_XYZ)), xyz)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Linear sRGB ``(B, 3, H, W)`` to CIE L*a*b* (D65 white)."""
    return by_rows(_rgb_to_lab, rgb)


def _rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    xyz = rgb_to_xyz(rgb.clamp(min=0)) / rgb.new_tensor(D65_XYZ).view(1, 3, 1, 1)
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp(min=1e-12) ** (1 / 3), (kappa * xyz + 16) / 116)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def delta_e2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference per pixel, ``(B, 3, H, W) x2 -> (B, 1, H, W)``.

    Sharma, Wu & Dalal (2005), doi:10.1002/col.20070.
    """
    return by_rows(_delta_e2000, lab1, lab2)


def _delta_e2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    L1, a1, b1 = lab1[:, 0:1], lab1[:, 1:2], lab1[:, 2:3]
    L2, a2, b2 = lab2[:, 0:1], lab2[:, 1:2], lab2[:, 2:3]
    c_bar = (torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2
    g = 0.5 * (1 - torch.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.atan2(b1, a1p) % (2 * math.pi)
    h2p = torch.atan2(b2, a2p) % (2 * math.pi)
    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, torch.where(dh < -math.pi, dh + 2 * math.pi, dh))
    dh = torch.where(c1p * c2p == 0, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)
    L_bar = (L1 + L2) / 2
    c_bar_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = torch.where(
        c1p * c2p == 0,
        h_sum,
        torch.where((h1p - h2p).abs() <= math.pi, h_sum / 2,
                    torch.where(h_sum < 2 * math.pi, (h_sum + 2 * math.pi) / 2, (h_sum - 2 * math.pi) / 2)),
    )
    t = (1 - 0.17 * torch.cos(h_bar - math.radians(30)) + 0.24 * torch.cos(2 * h_bar)
         + 0.32 * torch.cos(3 * h_bar + math.radians(6)) - 0.20 * torch.cos(4 * h_bar - math.radians(63)))
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_bar) - 275) / 25) ** 2))
    r_c = 2 * torch.sqrt(c_bar_p**7 / (c_bar_p**7 + 25.0**7))
    s_l = 1 + 0.015 * (L_bar - 50) ** 2 / torch.sqrt(20 + (L_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -torch.sin(2 * d_theta) * r_c
    return torch.sqrt((dL / s_l) ** 2 + (dC / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dC / s_c) * (dH / s_h))


def bradford_adaptation(src_white_rgb: torch.Tensor, dst_white_xyz=D65_XYZ) -> torch.Tensor:
    """3x3 matrix adapting linear sRGB seen under ``src_white_rgb`` to D65.

    ``src_white_rgb``: ``(3,)`` linear RGB of a neutral surface under the
    scene illuminant. The matrix is normalised so the source white keeps its
    luminance, i.e. the correction changes chromaticity, not exposure.
    """
    to_xyz = src_white_rgb.new_tensor(_RGB_TO_XYZ)
    brad = src_white_rgb.new_tensor(_BRADFORD)
    src_xyz = to_xyz @ src_white_rgb
    dst_xyz = src_white_rgb.new_tensor(dst_white_xyz) * src_xyz[1]
    gain = (brad @ dst_xyz) / (brad @ src_xyz)
    cat = torch.linalg.inv(brad) @ torch.diag(gain) @ brad
    return torch.linalg.inv(to_xyz) @ cat @ to_xyz


def _planck_uv(kelvin: float) -> tuple[float, float]:
    """CIE 1960 uv of the Planckian locus: Kim et al.'s cubic-spline approximation of its xy
    (US patent 7,024,034), valid 1667-25000 K."""
    t = float(kelvin)
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    d = -2 * x + 12 * y + 3
    return 4 * x / d, 6 * y / d


def blackbody_rgb(kelvin: float, tint: float = 0.0) -> tuple[float, float, float]:
    """Linear sRGB of a Planckian radiator, green normalised to 1.

    ``tint`` is the light's Duv, as a colour meter gives it: the distance from the Planckian locus
    in CIE 1960 uv along the locus' normal, positive above it (green), negative below (magenta).
    """
    u, v = _planck_uv(kelvin)
    if tint:
        u1, v1 = _planck_uv(float(kelvin) + 1.0)
        du, dv = u1 - u, v1 - v          # the locus runs to lower u and v as it gets bluer
        n = math.hypot(du, dv)
        u, v = u + dv / n * tint, v - du / n * tint
    d = 2 * u - 8 * v + 4
    x, y = 3 * u / d, 2 * v / d
    xyz = torch.tensor([x / y, 1.0, (1 - x - y) / y], dtype=torch.float64)
    rgb = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64)) @ xyz
    rgb = rgb / rgb[1]
    return tuple(float(c) for c in rgb)


def kelvin_and_tint(rgb: tuple[float, float, float]) -> tuple[float, float]:
    """The (kelvin, tint) ``blackbody_rgb`` gives back as ``rgb`` (a light's linear sRGB, any scale): the
    Planckian point nearest its CIE 1960 uv (mireds searched on a grid, then narrowed) and the signed
    distance from it along the locus' normal. Kelvin is searched over 1667-25000 K (Kim et al.'s range)."""
    x_, y_, z_ = (sum(m * c for m, c in zip(row, rgb)) for row in _RGB_TO_XYZ)
    d = x_ + 15 * y_ + 3 * z_
    u, v = 4 * x_ / d, 6 * y_ / d

    def gap(mired: float) -> float:
        pu, pv = _planck_uv(1e6 / mired)
        return (pu - u) ** 2 + (pv - v) ** 2

    lo, hi = 40.0, 600.0
    best = min((lo + (hi - lo) * k / 560 for k in range(561)), key=gap)
    lo, hi = max(40.0, best - 1.0), min(600.0, best + 1.0)
    for _ in range(40):      # golden-section search on the bracket around the grid's best
        a, b = hi - (hi - lo) * 0.618034, lo + (hi - lo) * 0.618034
        lo, hi = (lo, b) if gap(a) < gap(b) else (a, hi)
    kelvin = 1e6 / ((lo + hi) / 2)
    u0, v0 = _planck_uv(kelvin)
    u1, v1 = _planck_uv(kelvin + 1.0)
    du, dv = u1 - u0, v1 - v0
    n = math.hypot(du, dv)
    return kelvin, (u - u0) * dv / n - (v - v0) * du / n
