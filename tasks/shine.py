"""shine: even out the metal's light, give it sparkle, keep its colour.

Needs: linear RGB and the piece mask. Works on the metal only (the piece
minus its stones, found as ``gems`` finds them) and on luminance only: every
change is a per-pixel gain applied to R, G and B alike, so chromaticity, and
with it gold's warmth, stays where it was.

1. Dodge and burn: the metal's large-scale light (a Gaussian of its
   luminance, normalised over the metal only) is compressed towards its
   median by ``evenness``: a hot spot is burnt down, a dull side dodged up,
   the fine structure riding on top is kept as it is.
2. Clarity: local contrast at ``radius`` (the "clarity" of raw editors).
3. Highlights roll off with a soft knee so no new pixel clips; a pixel that
   would still leave the gamut is scaled back with its siblings (same hue).
   The clipped fraction on the piece never rises.
4. White metals (silver, white gold, platinum) lose their residual tint:
   metal pixels with little chroma have it scaled by ``1 - neutral_white``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.frame import Frame, luminance
from tasks.gems import GemsParams, find_stones
from tasks.ops import erode, gaussian_blur


class ShineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    evenness: float = Field(0.25, ge=0, le=0.9, description="share of the metal's large-scale light variation removed (dodge/burn)")
    light_radius: float = Field(24.0, gt=0, le=256, description="scale of 'large-scale light', px")
    clarity: float = Field(0.05, ge=0, le=1, description="local contrast added to the metal")
    radius: float = Field(8.0, gt=0, le=64, description="scale of that contrast, px")
    knee: float = Field(0.85, gt=0.5, lt=1, description="luminance where the highlight roll-off starts")
    neutral_white: float = Field(0.5, ge=0, le=1, description="share of a white metal's residual tint removed")
    white_chroma: float = Field(0.06, gt=0, le=0.5, description="chroma/luminance below which metal counts as white")


def _soft_knee(y: torch.Tensor, knee: float) -> torch.Tensor:
    """Identity below ``knee``, then an exponential approach to 1 (never reaches it)."""
    head = 1 - knee
    return torch.where(y < knee, y, knee + head * (1 - torch.exp(-(y - knee) / head)))


def _masked_blur(y: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian of ``y`` over ``mask`` only (normalised convolution), so the backdrop does not bleed in."""
    return gaussian_blur(y * mask, sigma) / gaussian_blur(mask, sigma).clamp(min=1e-4)


def metal_mask(image: torch.Tensor, piece: torch.Tensor) -> torch.Tensor:
    """The piece minus its stones and its 1 px rim, (B, 1, H, W)."""
    return erode(piece, 1) * (1 - find_stones(image, piece, GemsParams()))


def add_shine(frame: Frame, params: ShineParams) -> Frame:
    """Dodge/burn, clarity and highlight roll-off on the metal; white metals neutral."""
    piece = frame.masks.get("piece")
    if piece is None:
        return frame.noted("shine: skipped, no piece mask")
    image = frame.image
    metal = metal_mask(image, piece)
    if float(metal.sum()) < 16:
        return frame.noted("shine: skipped, no metal found")
    y = luminance(image).clamp(min=1e-5)
    log_y = torch.log(y)
    light = _masked_blur(log_y, metal, params.light_radius)
    centre = log_y[metal > 0.5].median()
    even = log_y - params.evenness * (light - centre)
    detail = even - _masked_blur(even, metal, params.radius)
    y_new = _soft_knee(torch.exp(even + params.clarity * detail), params.knee)
    was_clipped = image.amax(1, keepdim=True) >= 0.999
    ratio = torch.where(was_clipped, torch.ones_like(y), y_new / y)
    out = image * ratio
    # A channel that would exceed 1 is scaled back with its siblings: same hue, no new clipping.
    peak = out.amax(1, keepdim=True)
    out = torch.where((peak > 0.998) & ~was_clipped, out * (0.998 / peak), out)
    y_out = luminance(out)
    chroma = (out.amax(1, keepdim=True) - out.amin(1, keepdim=True)) / y_out.clamp(min=1e-4)
    white = (chroma < params.white_chroma).to(out.dtype) * params.neutral_white
    out = out + white * (y_out - out)
    image = metal * out + (1 - metal) * image
    return frame.replace(image=image).with_masks(metal=metal).noted(
        f"shine: evenness {params.evenness}, clarity {params.clarity}")
