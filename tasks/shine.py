"""shine: even out the metal's light, give it sparkle, keep its colour.

Needs: linear RGB and the piece mask. Works on the metal only (the piece
minus its stones, found as ``gems`` finds them) and on luminance only: every
change is a per-pixel gain applied to R, G and B alike, so chromaticity, and
with it gold's warmth, stays where it was.

Every step is corrective: it measures the metal against a catalog target
and changes only what misses it, so a photo that is already retouched passes
through (almost) untouched.

1. Dodge and burn: the metal's large-scale light (a Gaussian of its log
   luminance over the metal only) may span at most ``max_light_range``
   stops between its 5th and 95th percentile; a wider span is compressed
   towards the median (hot spots burnt down, dull sides dodged up); the fine
   structure riding on top is kept.
2. Clarity: local contrast (log luminance minus its ``radius`` blur) is lifted
   until its mean reaches ``target_contrast``, by at most ``clarity``.
3. Whatever was brightened rolls off with a soft knee so no new pixel clips;
   a pixel that would still leave the gamut is scaled back with its siblings
   (same hue). The clipped fraction on the piece never rises.
4. A white-metal piece (median chroma below ``white_chroma``) loses part of
   its residual tint (``neutral_white``); gold and rose gold are left warm.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.frame import Frame, luminance
from tasks.gems import GemsParams, find_stones
from tasks.ops import erode, gaussian_blur, masked_blur, quantiles, resize


class ShineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_light_range: float = Field(3.0, gt=0, le=12, description="widest span of the metal's large-scale light, stops (dodge/burn beyond it)")
    light_radius: float = Field(24.0, gt=0, le=256, description="scale of 'large-scale light', px for a piece up to "
                                "1000 px across (tasks.pipeline.PIECE_SIZE); grows with a larger piece")
    target_contrast: float = Field(0.35, ge=0, le=4, description="mean local contrast of the metal to reach, stops")
    clarity: float = Field(0.5, ge=0, le=2, description="largest relative lift of local contrast")
    radius: float = Field(8.0, gt=0, le=64, description="scale of that contrast, px (grows like light_radius)")
    knee: float = Field(0.85, gt=0.5, lt=1, description="luminance where the highlight roll-off starts")
    neutral_white: float = Field(0.3, ge=0, le=1, description="share of a white metal's residual tint removed")
    white_chroma: float = Field(0.06, gt=0, le=0.5, description="chroma/luminance below which metal counts as white")


def _soft_knee(y: torch.Tensor, knee: float) -> torch.Tensor:
    """Identity below ``knee``, then an exponential approach to 1 (never reaches it)."""
    head = 1 - knee
    return torch.where(y < knee, y, knee + head * (1 - torch.exp(-(y - knee) / head)))


# Sigmas above this (px) are blurred on a grid sigma // (EXACT_SIGMA / 2) times coarser: a camera-size piece's light
# (``ShineParams`` grow with the piece, see ``tasks.pipeline.PIECE_SIZE``) is smooth at that scale, and
# a sigma-60 kernel at full size costs a second and a half at 24 MP; the defaults at the simulator's
# scale (24 and 8 px) stay exact. (The grid follows the box the stage is handed, so there the result is
# within ~0.003 stops of the whole frame's, not bit-identical.)
EXACT_SIGMA = 24.0


def _masked_blur(y: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian of ``y`` over ``mask`` only (normalised convolution), so the backdrop does not bleed in."""
    step = int(sigma // (EXACT_SIGMA / 2)) if sigma > EXACT_SIGMA else 1
    if step == 1:
        return masked_blur(y, mask, sigma)[0]
    size, coarse = tuple(y.shape[-2:]), tuple(math.ceil(n / step) for n in y.shape[-2:])
    weighted, weight = (gaussian_blur(resize(t, coarse), sigma / step) for t in (y * mask, mask))
    return resize(weighted, size) / resize(weight, size).clamp(min=1e-4)


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    step = max(1, values.numel() // 1_000_000)  # torch.quantile refuses huge inputs
    return quantiles(values[::step].float(), qs).tolist()


def metal_mask(image: torch.Tensor, piece: torch.Tensor) -> torch.Tensor:
    """The piece minus its stones and its 1 px rim, (B, 1, H, W)."""
    return erode(piece, 1) * (1 - find_stones(image, piece, GemsParams()))


def add_shine(frame: Frame, params: ShineParams) -> Frame:
    """Dodge/burn, clarity and highlight roll-off on the metal; white metals neutral."""
    piece = frame.layer("piece")
    if piece is None:
        return frame.noted("shine: skipped, no piece mask")
    image = frame.image
    metal = metal_mask(image, piece)
    if float(metal.sum()) < 16:
        return frame.noted("shine: skipped, no metal found")
    y = luminance(image).clamp(min=1e-5)
    log_y = torch.log2(y)
    sel = metal > 0.5
    light = _masked_blur(log_y, metal, params.light_radius)
    lo, centre, hi = _quantiles(light[sel], (0.05, 0.5, 0.95))
    squeeze = max(0.0, 1.0 - params.max_light_range / max(hi - lo, 1e-6))
    shift = -squeeze * (light - centre)
    detail = log_y + shift - _masked_blur(log_y + shift, metal, params.radius)
    contrast = float(detail[sel].abs().mean())
    lift = min(params.clarity, max(0.0, params.target_contrast / max(contrast, 1e-6) - 1.0))
    y_new = y * torch.exp2(shift + lift * detail)  # exactly y where nothing is to be done
    # only what was brightened rolls off, so untouched pixels stay exactly as they were
    y_new = torch.where(y_new > y, y + _soft_knee(y_new, params.knee) - _soft_knee(y, params.knee), y_new)
    was_clipped = image.amax(1, keepdim=True) >= 0.999
    ratio = torch.where(was_clipped, torch.ones_like(y), y_new / y)
    out = image * ratio
    # A channel that would exceed 1 is scaled back with its siblings: same hue, no new clipping.
    peak = out.amax(1, keepdim=True)
    out.mul_(torch.where((peak > 0.998) & ~was_clipped, 0.998 / peak, torch.ones_like(peak)))
    y_out = luminance(out)
    chroma = (out.amax(1, keepdim=True) - out.amin(1, keepdim=True)) / y_out.clamp(min=1e-4)
    white_metal = float(chroma[sel].median()) < params.white_chroma
    neutralise = white_metal and params.neutral_white > 0
    tint = (chroma < params.white_chroma).to(out.dtype) * params.neutral_white if neutralise else None
    for c in range(out.shape[1]):     # in place, a channel at a time: no 3-channel temporaries
        if neutralise:
            out[:, c:c + 1] += tint * (y_out - out[:, c:c + 1])
        out[:, c:c + 1] = metal * out[:, c:c + 1] + (1 - metal) * image[:, c:c + 1]
    image = out
    return frame.replace(image=image).with_masks(metal=metal > 0.5).noted(
        f"shine: light range {hi - lo:.2f} stops (squeezed {squeeze:.2f}), contrast {contrast:.2f} (lifted {lift:.2f})"
        + (", white metal neutralised" if neutralise else ""))
