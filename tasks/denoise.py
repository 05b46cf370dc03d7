"""denoise: the camera's chroma noise on the piece smoothed away, its luminance kept to the bit.

Needs: linear RGB and the piece's alpha (after the cut-out). At a high ISO a demosaiced frame carries
chroma noise in blotches 2-4 px wide (AHD interpolates each colour from its neighbours), which makes a
metal's colour speckled and its mean colour error grow (issue 11: a rose-gold pave ring at ISO 3200
exported with ΔE 3.27, its colour right). Each piece pixel's chromaticity (R/Y and B/Y, with Y its
luminance) is pulled towards its window's mean by as much as its window's variance is noise (a local
Wiener, or Lee, filter): where the window's chroma varies no more than the camera's noise, the
pixel takes the mean; where it varies far more (a ruby against its gold seat, a facet's fire) it is
kept. The noise is the backdrop's: its chroma variance over the same window beside the piece, grown
for darker pixels as shot noise grows against the signal (variance of a ratio over Y goes as 1/Y).
Only piece pixels are read and written, so no backdrop colour is mixed into a wire or an edge, and
a frame whose backdrop shows less chroma noise than ``min_noise`` (a clean studio file) is left
untouched.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.color import LUMINANCE
from tasks.frame import Frame
from tasks.ops import box_mean, channel_quantile, dilate, erode

# Y + DARK_FLOOR divides the colour: in the shadows a ratio over Y alone would be all noise
DARK_FLOOR = 0.02
# px between the piece and the backdrop the noise is read on (its fringe and soft shadow are no plain
# backdrop); the band read is 4 windows' radii wide beyond that, so the stage reads the same pixels on
# the piece's box grown by its reach as on the whole frame
BACKDROP_GAP = 8
# the noise is read on this many backdrop windows at most, and on no fewer than MIN_WINDOWS
NOISE_SAMPLES = 20_000
MIN_WINDOWS = 500


class DenoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chroma_radius: int = Field(5, ge=0, le=16, description="half-width (px) of the square window each piece "
                               "pixel's chroma is smoothed over; 0: off")
    min_noise: float = Field(0.02, ge=0, description="the backdrop's chroma noise (standard deviation of R/Y and "
                             "B/Y over the window, median over the backdrop) below which the frame is left as it is")


def chroma_reach(params: DenoiseParams) -> int:
    """px beyond the piece the stage reads: the backdrop band, each of its pixels with its window."""
    return BACKDROP_GAP + 6 * params.chroma_radius


def _backdrop_noise(chroma: torch.Tensor, lift: torch.Tensor, backdrop: torch.Tensor, radius: int
                    ) -> tuple[torch.Tensor, float] | None:
    """The camera's chroma noise on the ``backdrop`` band ((1, 1, H, W) 0/1): the median over its
    windows that lie wholly in it of each chroma channel's variance over the window, and the median
    ``lift`` (luminance + DARK_FLOOR) there; read on up to ``NOISE_SAMPLES`` such windows, evenly
    spread (the same ones on the piece's box as on the whole frame). None when too few windows."""
    plain = box_mean(backdrop, radius)[0, 0] > 0.999
    plain[:radius], plain[-radius:], plain[:, :radius], plain[:, -radius:] = False, False, False, False  # whole windows
    ys, xs = plain.nonzero(as_tuple=True)
    if len(ys) < MIN_WINDOWS:
        return None
    step = max(1, len(ys) // NOISE_SAMPLES)
    ys, xs = ys[::step], xs[::step]
    total = chroma.new_zeros((chroma.shape[1], len(ys)))
    squares = torch.zeros_like(total)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            v = chroma[0][:, ys + dy, xs + dx]
            total += v
            squares += v * v
    n = (2 * radius + 1) ** 2
    var = (squares / n - (total / n) ** 2).clamp_(min=0)
    return channel_quantile(var, 0.5), float(channel_quantile(lift[0][:, ys, xs], 0.5)[0])


def reduce_chroma_noise(frame: Frame, params: DenoiseParams) -> Frame:
    """``frame`` with its piece's chroma noise smoothed (module docstring); the backdrop and every
    pixel's luminance as they were."""
    if params.chroma_radius == 0:
        return frame
    if frame.alpha is None:
        return frame.noted("denoise: skipped, no cut-out")
    image, r = frame.image, params.chroma_radius
    piece = (frame.alpha > 0.5).to(image.dtype)
    if not bool(piece.any()):
        return frame.noted("denoise: skipped, no piece")
    # the backdrop band: BACKDROP_GAP px from anything of the piece and at most 4 radii past that
    backdrop = dilate(piece, BACKDROP_GAP + 4 * r).sub_(dilate((frame.alpha > 0.01).to(image.dtype), BACKDROP_GAP))
    y = (image * image.new_tensor(LUMINANCE).view(1, 3, 1, 1)).sum(1, keepdim=True)
    lift = y + DARK_FLOOR
    chroma = image[:, 0::2] / lift                      # R/Y and B/Y: (1, 2, H, W)
    read = _backdrop_noise(chroma, lift, backdrop.clamp_(min=0), r)
    del backdrop
    if read is None:
        return frame.noted("denoise: skipped, too little plain backdrop to read the camera's noise on")
    noise_var, bg_lift = read
    noise = float(noise_var.mean().sqrt())
    if noise < params.min_noise:
        return frame.noted(f"denoise: backdrop chroma noise {noise:.3f}, under {params.min_noise}: left as it is")
    # the piece's own pixels, 1 px in from its outline, are what each window reads: an edge pixel is
    # half backdrop and a thin wire's mask half sweep
    solid = erode(piece, 1)
    share = box_mean(solid, r).clamp_(min=1e-6)
    weighted = chroma * solid
    mean = box_mean(weighted, r).div_(share)
    var = box_mean(weighted.mul_(chroma), r).div_(share).sub_(mean * mean).clamp_(min=1e-12)
    del weighted, share
    # the share of each window's variance that is more than the noise expected at the pixel's light
    keep = var.sub(noise_var.view(1, 2, 1, 1) * (bg_lift / lift)).clamp_(min=0).div_(var)
    del var
    smooth = chroma.sub_(mean).mul_(keep).add_(mean).mul_(lift)     # red and blue, smoothed
    del mean, keep
    wr, wg, wb = LUMINANCE
    green = (y - wr * smooth[:, :1] - wb * smooth[:, 1:]) / wg        # the same luminance, to the rounding
    smooth = torch.cat([smooth[:, :1], green, smooth[:, 1:]], 1)
    # a pixel whose smoothed colour leaves [0, 1] (a clipped highlight's neighbour) keeps its own
    take = (solid > 0.5) & ((smooth >= 0) & (smooth <= 1)).all(1, keepdim=True)
    out = torch.where(take, smooth, image)
    share = float(solid.sum() / piece.sum())
    return frame.replace(image=out).noted(
        f"denoise: backdrop chroma noise {noise:.3f}; chroma smoothed over {2 * r + 1} px on {share:.0%} of the piece")
