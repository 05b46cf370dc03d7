"""shine: even out metal highlights and give polished metal its sparkle.

Needs: linear RGB and the piece mask. Works on luminance only and scales
RGB by the luminance ratio, so gold keeps its hue. Adds local contrast
(a large-radius unsharp mask, the "clarity" of raw editors) and rolls off
highlights with a soft knee so no new pixel clips: the clipped fraction on
the piece never rises.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.frame import Frame, luminance
from tasks.ops import erode, gaussian_blur


class ShineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clarity: float = Field(0.1, ge=0, le=1, description="local contrast added to the metal")
    radius: float = Field(8.0, gt=0, le=64, description="scale of that contrast, px")
    knee: float = Field(0.85, gt=0.5, lt=1, description="luminance where the highlight roll-off starts")


def _soft_knee(y: torch.Tensor, knee: float) -> torch.Tensor:
    """Identity below ``knee``, then an exponential approach to 1 (never reaches it)."""
    head = 1 - knee
    return torch.where(y < knee, y, knee + head * (1 - torch.exp(-(y - knee) / head)))


def add_shine(frame: Frame, params: ShineParams) -> Frame:
    """Local contrast plus highlight roll-off on the piece."""
    piece = frame.masks.get("piece")
    if piece is None:
        return frame.noted("shine: skipped, no piece mask")
    image = frame.image
    metal = erode(piece, 1)
    y = luminance(image).clamp(min=1e-5)
    detail = y - gaussian_blur(y, params.radius)
    y_new = _soft_knee((y + params.clarity * detail).clamp(min=0), params.knee)
    was_clipped = image.amax(1, keepdim=True) >= 0.999
    ratio = torch.where(was_clipped, torch.ones_like(y), y_new / y)
    out = image * ratio
    # A channel that would exceed 1 is scaled back with its siblings: same hue, no new clipping.
    peak = out.amax(1, keepdim=True)
    out = torch.where((peak > 0.998) & ~was_clipped, out * (0.998 / peak), out)
    image = metal * out + (1 - metal) * image
    return frame.replace(image=image).with_masks(metal=metal).noted(f"shine: clarity {params.clarity}")
