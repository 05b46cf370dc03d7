"""gems: find stones, lift their brilliance and colour within gamut.

Needs: linear RGB and the piece mask. Stones are piece pixels that are
either clearly coloured (sapphire, ruby, emerald) or colourless with facet
micro-contrast (diamond). Both lifts are corrective: facet contrast is raised
only while the stones' mean relative facet contrast is below
``target_facets``, colour only while coloured stones' median chroma is below
``target_chroma``, each by a bounded amount, so stones that already sparkle
(a retouched photo) pass untouched. Saturation is raised by scaling chroma
about the pixel's own luminance, which leaves the hue where it was; the gain
is capped per pixel so no channel leaves [0, 1].
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.compose import grown_box
from tasks.frame import Frame, luminance
from tasks.ops import box_mean, dilate, erode, gaussian_blur, opening


FACET_SIGMA = 1.5
FACET_REACH = math.ceil(3 * FACET_SIGMA)    # px the facet blur (tasks.ops.gaussian_blur) reads around a stone


class GemsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_chroma: float = Field(0.5, gt=0, le=1, description="median chroma/max-channel of coloured stones to reach")
    saturation: float = Field(0.12, ge=0, le=1, description="largest relative chroma gain on stones")
    target_facets: float = Field(0.2, ge=0, le=4, description="mean relative facet contrast of stones to reach")
    micro_contrast: float = Field(0.3, ge=0, le=2, description="largest facet contrast gain")
    min_chroma: float = Field(0.45, gt=0, lt=1, description="chroma/max-channel that makes a pixel a coloured stone")
    facet_contrast: float = Field(0.25, gt=0, description="local relative std that marks a colourless stone's facets")


def find_stones(image: torch.Tensor, piece: torch.Tensor, params: GemsParams) -> torch.Tensor:
    peak = image.amax(1, keepdim=True).clamp(min=1e-4)
    chroma = (peak - image.amin(1, keepdim=True)) / peak
    y = luminance(image)
    rel_std = (box_mean(y * y, 2) - box_mean(y, 2) ** 2).clamp(min=0).sqrt() / box_mean(y, 2).clamp(min=1e-3)
    # Gold is chromatic too: coloured stones are told apart by a hue far from gold's orange.
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    # ...and rubies from rose gold by green: rose gold keeps more green than blue, a ruby does not
    not_gold = (b > g) | (g > r) | ((r > 2.5 * g) & (g < 1.2 * b))
    coloured = (chroma > params.min_chroma) & not_gold
    faceted = (chroma < 0.15) & (rel_std > params.facet_contrast) & (y > 0.4)
    stones = (coloured | faceted).to(image.dtype) * erode(piece, 1)
    return dilate(opening(stones, 1), 1) * erode(piece, 1)


def clarify_gems(frame: Frame, params: GemsParams) -> Frame:
    piece = frame.layer("piece")
    if piece is None:
        return frame.noted("gems: skipped, no piece mask")
    whole = frame.image
    stones_whole = find_stones(whole, piece, params)
    found = stones_whole > 0.5      # the mask handed on (bool, as a frame keeps its 0/1 masks)
    # the lift changes stone pixels only: it is made on their box (grown by the facet blur's reach)
    box = grown_box(stones_whole, FACET_REACH, threshold=0.0)
    if box is None or not bool(found[..., box[0], box[1]].any()):
        return frame.with_masks(stones=found).noted("gems: no stones found")
    image, stones = whole[..., box[0], box[1]], stones_whole[..., box[0], box[1]]
    sel = stones > 0.5
    # corrective: lift facets and colour only as far as the stones fall short of the targets
    y = luminance(image)
    facets = y - gaussian_blur(y, FACET_SIGMA)
    contrast = float((facets.abs() / y.clamp(min=1e-3))[sel].mean())
    sharpen = min(params.micro_contrast, max(0.0, params.target_facets / max(contrast, 1e-6) - 1.0))
    peak0 = image.amax(1, keepdim=True).clamp(min=1e-4)
    rel_chroma = (peak0 - image.amin(1, keepdim=True)) / peak0
    coloured = sel & (rel_chroma > params.min_chroma)
    median = float(rel_chroma[coloured].median()) if bool(coloured.any()) else params.target_chroma
    boost = min(1 + params.saturation, max(1.0, params.target_chroma / max(median, 1e-6)))
    if sharpen == 0 and boost == 1:
        return frame.with_masks(stones=found).noted(f"gems: {int(float(stones.sum()))} stone px, on target")
    # (in place and a plane at a time where it can be: a pave piece's stones can span most of a 24 MP frame)
    lifted = image * ((y + sharpen * facets).clamp(min=0) / y.clamp(min=1e-5))
    del facets, y
    peak = lifted.amax(1, keepdim=True)
    was_clipped = image.amax(1, keepdim=True) >= 0.999
    lifted.mul_(torch.where((peak > 0.998) & ~was_clipped, 0.998 / peak, torch.ones_like(peak)))
    del peak, was_clipped
    y2 = luminance(lifted)
    chroma = lifted.sub_(y2)
    # Largest gain that keeps every channel inside [0, 1) so nothing new clips.
    gain = torch.full_like(y2, boost)
    for c in range(3):
        ch = chroma[:, c:c + 1]
        room = torch.where(ch > 0, (0.998 - y2).clamp(min=0) / ch.clamp(min=1e-6),
                           torch.where(ch < 0, y2 / (-ch).clamp(min=1e-6), torch.full_like(ch, 1e6)))
        torch.minimum(gain, room, out=gain)
    out = chroma.mul_(gain.clamp_(min=1.0)).add_(y2).clamp_(0, 1)
    del gain, y2
    lifted_whole = whole.clone()
    lifted_whole[..., box[0], box[1]] = out.sub_(image).mul_(stones).add_(image)
    return frame.replace(image=lifted_whole).with_masks(stones=found).noted(
        f"gems: {int(float(stones.sum()))} stone px, facets {contrast:.2f} (lifted {sharpen:.2f}), "
        f"chroma {median:.2f} (x{boost:.2f})")
