"""develop: decoded source pixels -> scene-linear RGB.

Needs: the decoded pixels and their transfer curve (RAW files arrive linear
from LibRaw, rendered JPEG/TIFF/PNG arrive sRGB-encoded). Changes: only the
tone curve and, when asked, exposure. Decoding itself is file I/O and lives
in ``infra.imageio``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.color import srgb_to_linear
from tasks.frame import Frame


class DevelopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exposure_ev: float = Field(0.0, ge=-4, le=4, description="exposure change in stops, applied in linear light")


def develop(pixels: torch.Tensor, transfer: str, params: DevelopParams) -> Frame:
    """Make a Frame from decoded pixels.

    Args:
        pixels: (B, 3, H, W) in [0, 1], encoded with ``transfer``.
        transfer: ``"linear"`` or ``"srgb"``.

    Example:
        >>> develop(torch.full((1, 3, 4, 4), 0.5), "srgb", DevelopParams()).image[0, 0, 0, 0]
        tensor(0.2140)
    """
    # one new channel-first frame, then worked on in place: the decoder's channel-last pixels are read
    # once (a clamped copy and then a contiguous one were two 288 MB frames more at 24 MP)
    if transfer == "srgb":
        image = srgb_to_linear(pixels).contiguous()
    elif transfer == "linear":
        image = pixels.clone(memory_format=torch.contiguous_format)
    else:
        raise ValueError(f"unknown transfer curve {transfer!r}")
    if params.exposure_ev:
        image.mul_(2.0**params.exposure_ev)
    return Frame(image=image.clamp_(0, 1))
