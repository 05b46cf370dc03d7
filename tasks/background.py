"""background: put the piece on pure white, transparency or a solid colour.

Needs: linear RGB and the alpha matte. Outside the piece (alpha 0) the
result is exactly the target colour, so a white export is (255, 255, 255)
with no near-white noise. The composite keeps the piece's own colours in
``Frame.foreground`` for the transparent cut-out export. An optional soft
contact shadow darkens the backdrop just below the piece.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.color import srgb8_to_linear
from tasks.compose import grown_box
from tasks.frame import Frame
from tasks.ops import gaussian_blur


class BackgroundParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["white", "transparent", "color"] = "white"
    color: tuple[int, int, int] = Field((255, 255, 255), description="sRGB 8-bit colour for mode 'color'")
    shadow: bool = False
    shadow_opacity: float = Field(0.25, ge=0, le=1)
    shadow_blur: float = Field(0.02, gt=0, le=0.2, description="shadow softness, fraction of the image height")


def replace_background(frame: Frame, params: BackgroundParams) -> Frame:
    if frame.alpha is None:
        return frame.flagged("mask_suspect", "background: no alpha matte; background left as shot")
    image = frame.image
    # Snap near-0/near-1 alpha so the backdrop is exactly the target colour.
    alpha = frame.alpha.clone()
    alpha[alpha < 0.5 / 255] = 0
    alpha[alpha > 254.5 / 255] = 1
    rgb = (255, 255, 255) if params.mode != "color" else params.color
    colour = srgb8_to_linear(rgb, image)
    if params.shadow:
        h = image.shape[-2]
        shift = max(1, int(0.01 * h))
        cast = torch.roll(alpha, shifts=shift, dims=-2)
        shade = params.shadow_opacity * gaussian_blur(cast, params.shadow_blur * h).clamp(0, 1)
        composite = colour * (1 - shade)
    else:
        composite = colour.expand_as(image).clone()
    # alpha * image + (1 - alpha) * backdrop, made where alpha > 0 only: elsewhere it is the backdrop
    box = grown_box(alpha, 0, threshold=0.0)
    if box is not None:
        a, backdrop = alpha[..., box[0], box[1]], composite[..., box[0], box[1]]
        backdrop.copy_(a * image[..., box[0], box[1]] + (1 - a) * backdrop)
    return frame.replace(image=composite, alpha=alpha, foreground=image).noted(f"background: {params.mode}")
