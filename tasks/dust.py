"""dust: remove dust specks and lint, spare the design's own small details.

Needs: linear RGB and, when available, the piece mask from ``cutout``.
Dark specks and fibres show up in a morphological black-hat (closing minus
image): anything narrower than the structuring element that is darker than
its surroundings. A dust speck and a pave seat both qualify, so context
decides: on the backdrop everything goes; on the piece only compact blobs
that stand alone are removed, because design details repeat (pave seats,
milgrain, engraving come in rows) and dust does not. Removed pixels are
filled from their surroundings. Output: the ``defects`` mask.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.color import linear_to_srgb
from tasks.frame import Frame, luminance
from tasks.ops import closing, dilate, fill_holes


class DustParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    radius: int = Field(4, ge=1, le=16, description="largest speck radius in px")
    contrast: float = Field(0.05, gt=0, le=1, description="darker than surroundings by this much (sRGB) to count")
    max_area: int = Field(80, ge=1, description="largest speck on the piece, px")
    max_elongation: float = Field(3.0, ge=1, description="longest/shortest side of a speck on the piece")
    neighbours: int = Field(2, ge=0, description="a blob with more candidates than this nearby is texture, not dust")
    neighbourhood: int = Field(24, ge=4, description="radius in px of that neighbourhood")
    grow: int = Field(1, ge=0, le=8, description="px added around each speck before filling")


def find_dust(image: torch.Tensor, piece: torch.Tensor | None, params: DustParams) -> torch.Tensor:
    """Mask (B=1, 1, H, W) of dust and lint to remove."""
    y = linear_to_srgb(luminance(image))
    blackhat = closing(y, params.radius) - y
    cand = (blackhat > params.contrast).to(torch.uint8)[0, 0].cpu().numpy()
    on_piece = np.zeros_like(cand) if piece is None else (piece[0, 0] > 0.5).cpu().numpy().astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return torch.zeros_like(y)
    keep = np.zeros(n, dtype=bool)
    w, h, area = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT], stats[1:, cv2.CC_STAT_AREA]
    cx, cy = centroids[1:, 0], centroids[1:, 1]
    touches_piece = np.bincount(labels[on_piece > 0], minlength=n)[1:] > 0
    compact = (area <= params.max_area) & (np.maximum(w, h) <= params.max_elongation * np.minimum(w, h) + 2)
    points = np.zeros(cand.shape, np.float32)
    ix, iy = cx.round().astype(int).clip(0, cand.shape[1] - 1), cy.round().astype(int).clip(0, cand.shape[0] - 1)
    np.add.at(points, (iy, ix), 1.0)
    k = 2 * params.neighbourhood + 1
    density = cv2.boxFilter(points, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    crowded = density[iy, ix] - 1 > params.neighbours
    keep[1:] = ~touches_piece | (compact & ~crowded)
    return torch.from_numpy(keep[labels].astype(np.float32)).to(image)[None, None]


def remove_dust(frame: Frame, params: DustParams) -> Frame:
    """Find and fill dust; the filled area is reported in ``masks['defects']``."""
    piece = frame.masks.get("piece")
    defects = find_dust(frame.image, piece, params)
    hole = dilate(defects, params.grow)
    image = fill_holes(frame.image, hole)
    changed = float((hole * (piece if piece is not None else 1)).sum())
    return frame.replace(image=image).with_masks(defects=hole).noted(
        f"dust: {int(float(hole.sum()))} px filled, {int(changed)} on the piece")
