"""neutralize: remove the light's colour cast, keep the metal's colour.

Needs: linear RGB (before the cut-out, so the whole backdrop is available).
Estimates the illuminant from what should be neutral, the studio sweep seen
along the frame border, constrains it to plausible studio light (the
Planckian locus plus a small green/magenta tint), and adapts the image to
D65 in linear light: by default with per-channel gains (what a camera's white
balance does, and exact for a cast that scales the channels), or with a
Bradford transform. Gold stays gold because the correction comes from the
backdrop, never from the piece's own colours. A known light (``kelvin``,
e.g. read off a grey card for the whole shoot) skips the estimate: the way
to handle coloured paper, where the backdrop is not neutral; ``card_light``
reads it off a shoot's grey-card frame. A border that shows no light (a
desk's or fabric's texture; clipped or black on over half of it) is no white
reference: the colour is left as shot and flagged.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.color import LUMINANCE, blackbody_rgb, bradford_adaptation, kelvin_and_tint
from tasks.frame import Frame
from tasks.ops import by_rows, channel_quantile, gaussian_blur, shrunk_by


class NeutralizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    border: float = Field(0.06, gt=0, lt=0.5, description="width of the frame border sampled for the backdrop")
    max_tint: float = Field(0.008, ge=0, le=0.03, description="largest green/magenta tint accepted (Duv, see tasks.color.blackbody_rgb)")
    trust_backdrop: float = Field(0.04, ge=0, description="log-chroma distance from studio light within which the backdrop colour is taken as the light's")
    max_texture: float = Field(0.0105, gt=0, description="luminance texture of the border (median |band-pass(Y)| / Y, see border_texture) above which it is no white reference (a desk, fabric)")
    min_readable: float = Field(0.5, ge=0, le=1, description="share of the border that must be neither clipped nor black for the light to be read from it (a blown-out sweep or light box says nothing of it)")
    off_locus_flag: float = Field(0.06, gt=0, description="log-chroma distance from studio light above which the backdrop is called coloured")
    strength: float = Field(1.0, ge=0, le=1, description="1 = full correction")
    method: Literal["rgb", "bradford"] = Field(
        "rgb", description="chromatic adaptation: per-channel gains in linear RGB (camera white balance) or Bradford")
    kelvin: float | None = Field(None, ge=2000, le=15000, description="known light (e.g. from a grey card): skip estimation")
    tint: float = Field(0.0, ge=-0.03, le=0.03, description="green/magenta tint of the known light: its Duv, as a colour meter gives it (+ green)")


@functools.lru_cache(maxsize=4)
def _locus_table(max_tint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-chroma of studio lights from 2400 K to 12000 K (even steps in mired)."""
    kelvins = [1e6 / m for m in range(83, 418, 2)]
    tints = [max_tint * t / 4 for t in range(-4, 5)]
    params, chroma = [], []
    for k in kelvins:
        for t in tints:
            r, g, b = blackbody_rgb(k, t)
            if min(r, b) <= 0:  # outside sRGB: no studio light looks like this
                continue
            params.append((k, t))
            chroma.append((math.log(r / g), math.log(b / g)))
    return torch.tensor(params, dtype=torch.float64), torch.tensor(chroma, dtype=torch.float64)


def _border_width(h: int, w: int, params: NeutralizeParams) -> int:
    return max(2, int(round(params.border * min(h, w))))


def _border_strips(h: int, w: int, params: NeutralizeParams) -> tuple[tuple[slice, slice], ...] | None:
    """The border's top, bottom, left and right strips as (rows, cols); None when the frame is all border."""
    bw = _border_width(h, w, params)
    if 2 * bw >= min(h, w):
        return None
    return ((slice(0, bw), slice(0, w)), (slice(h - bw, h), slice(0, w)),
            (slice(bw, h - bw), slice(0, bw)), (slice(bw, h - bw), slice(w - bw, w)))


def _border(image: torch.Tensor, params: NeutralizeParams) -> torch.Tensor:
    _, _, h, w = image.shape
    bw = _border_width(h, w, params)
    border = torch.ones((1, 1, h, w), dtype=image.dtype, device=image.device)
    border[..., bw:h - bw, bw:w - bw] = 0
    return border


# the texture's band: the pixel scale (sensor noise) is blurred away, a desk's grain and a paper's
# fibres are what is left at 1.5-4 px
TEXTURE_SIGMAS = (1.5, 4.0)
TEXTURE_REACH = math.ceil(3 * TEXTURE_SIGMAS[1])    # px the wider blur (tasks.ops.gaussian_blur) reads around a pixel


def border_texture(image: torch.Tensor, params: NeutralizeParams) -> float:
    """Luminance texture along the frame border, band-passed (a difference of Gaussians) so camera
    noise does not count: on the training worlds (simulator, default and wide) 0.0005-0.008 on
    sweeps, light boxes and papers at every ISO, 0.014-0.027 on wooden desks, where the plain
    high-pass it replaces read 0.003-0.058 on sweeps and 0.028-0.056 on desks (noisy sweeps were
    taken for desks, and a desk for a sweep). ``max_texture`` sits between the two.

    Read on the border's four strips, each with the blur's reach of context: the whole frame's
    values pixel for pixel to the last bit of a float (the blur pads only at the frame's edges;
    OpenCV's vector path can round a strip's last columns 1 ulp apart) at a fraction of the pixels
    (a 24 MP frame's 0.77 s -> 0.12 s, issue 13)."""
    _, _, h, w = image.shape
    strips = _border_strips(h, w, params)
    if strips is None or min(h, w) <= 2 * TEXTURE_REACH + 1:
        # a frame that is all border, or so small the blur's reach is cut to it: the whole frame
        strips = ((slice(0, h), slice(0, w)),)
    fine, level = [], []
    for rows, cols in strips:
        read = (slice(max(rows.start - TEXTURE_REACH, 0), min(rows.stop + TEXTURE_REACH, h)),
                slice(max(cols.start - TEXTURE_REACH, 0), min(cols.stop + TEXTURE_REACH, w)))
        y = image[..., read[0], read[1]].mean(1, keepdim=True)
        own = (slice(rows.start - read[0].start, rows.stop - read[0].start),
               slice(cols.start - read[1].start, cols.stop - read[1].start))
        band = gaussian_blur(y, TEXTURE_SIGMAS[0]) - gaussian_blur(y, TEXTURE_SIGMAS[1])
        fine.append(band[..., own[0], own[1]].abs().reshape(-1))
        level.append(y[..., own[0], own[1]].reshape(-1))
    if len(strips) == 1:      # the inner rectangle left out, as ``_border`` leaves it
        inner = _border(image, params)[0, 0].reshape(-1) > 0.5
        fine, level = [fine[0][inner]], [level[0][inner]]
    return float(torch.cat(fine).median() / torch.cat(level).median().clamp(min=1e-4))


def _border_pixels(image: torch.Tensor, params: NeutralizeParams) -> torch.Tensor:
    """The pixels of ``_border`` as (C, N), in the order a mask over the frame reads them (row by row),
    gathered from its strips: no frame-sized mask or temporary (0.1 GB each at 24 MP)."""
    _, c, h, w = image.shape
    strips = _border_strips(h, w, params)
    if strips is None:
        return image[0].reshape(c, -1)
    top, bottom, left, right = (image[0][:, rows, cols] for rows, cols in strips)
    # a row of the sides is its left part then its right part, as a mask reads them
    return torch.cat([top.reshape(c, -1), torch.cat([left, right], -1).reshape(c, -1), bottom.reshape(c, -1)], 1)


def _readable(image: torch.Tensor, params: NeutralizeParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The border's pixels (C, N), and which of them carry the light's colour (``_shows_light``)."""
    pixels = _border_pixels(image, params)
    return pixels, _shows_light(pixels)


def _shows_light(pixels: torch.Tensor) -> torch.Tensor:
    """Which of ``pixels`` (C, N) carry the light's colour: neither clipped nor black."""
    return (pixels.mean(0) > 0.03) & (pixels.amax(0) < 0.98)


def estimate_illuminant(image: torch.Tensor, params: NeutralizeParams,
                        readable: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, float, float, float]:
    """Linear RGB of the scene light (green = 1), its kelvin, tint and off-locus distance.
    ``readable``: ``_readable(image, params)`` when the caller has it."""
    pixels, usable = readable or _readable(image, params)
    bg = channel_quantile(pixels[:, usable] if int(usable.sum()) >= 64 else pixels, 0.5).double().clamp(min=1e-4)
    obs = torch.stack([torch.log(bg[0] / bg[1]), torch.log(bg[2] / bg[1])]).cpu()
    table, chroma = _locus_table(params.max_tint)
    dist = (chroma - obs).norm(dim=1)
    best = int(dist.argmin())
    kelvin, tint = (float(v) for v in table[best])
    # Near studio light the backdrop itself is the best white; far from it the
    # backdrop is probably coloured paper, so only its plausible part is used.
    r_g, b_g = torch.exp(obs if dist[best] <= params.trust_backdrop else chroma[best])
    white = torch.tensor([float(r_g), 1.0, float(b_g)], dtype=image.dtype, device=image.device)
    return white, kelvin, tint, float(dist[best])


class NotACard(ValueError):
    """A grey-card frame from which no light can be read; the message says why, in a clause."""


# what a grey-card frame must show in its middle (the card filling at least the middle half of each side)
CARD_READABLE = 0.9      # share of that window neither clipped nor black
CARD_BLOCK = 16          # px a side of the averages the flatness tests read (a 256th of the noise's variance)
CARD_CHROMA_SPREAD = 0.05   # largest 5-95th percentile spread of log(R/G) or log(B/G) over those averages
CARD_LIGHT_RANGE = 1.6   # largest 95th / 5th percentile of luminance there (the light's fall-off, not a subject)
CARD_MAX_TINT = 0.02     # |Duv| of the lights a card may name: ANSI C78.377 holds white LED lamps to 0.006;
                         # beyond 0.02 no studio calls a light white, and the card is likelier coloured


def card_light(image: torch.Tensor) -> tuple[int, float]:
    """The light's (kelvin, tint) read off a grey-card frame ``image`` (B, 3, H, W), linear, developed as the
    shoot's images are: the median colour of the frame's middle (half of each side, where the card must be;
    the median of its ``CARD_BLOCK`` px averages), as ``blackbody_rgb``'s kelvin and tint
    (``tasks.color.kelvin_and_tint``). A card is neutral, so its
    colour is the light's whatever the backdrop: what the border of a coloured paper, a desk or a
    blown-out sweep cannot tell. Raises ``NotACard`` for a middle that is clipped or black, that is no one
    flat colour (a piece, a backdrop's edge), or whose colour no studio light gives (a coloured card)."""
    _, _, h, w = image.shape
    middle = image[..., h // 4: h - h // 4, w // 4: w - w // 4]
    pixels = middle[0].reshape(3, -1)
    share = float(_shows_light(pixels).float().mean())
    if share < CARD_READABLE:
        raise NotACard(f"its middle is clipped or black on {1 - share:.0%} of it")
    block = max(1, min(CARD_BLOCK, min(middle.shape[-2:]) // 16))
    blocks = shrunk_by(middle, block)[0].reshape(3, -1).double().clamp(min=1e-4)
    chroma = torch.stack([torch.log(blocks[0] / blocks[1]), torch.log(blocks[2] / blocks[1])])
    lo, hi = (channel_quantile(chroma, q) for q in (0.05, 0.95))
    if (spread := float((hi - lo).max())) > CARD_CHROMA_SPREAD:
        raise NotACard(f"its middle is no one colour (log-chroma spread {spread:.3f})")
    y = (blocks * blocks.new_tensor(LUMINANCE)[:, None]).sum(0, keepdim=True)
    dark, bright = (float(channel_quantile(y, q)[0]) for q in (0.05, 0.95))
    if bright > CARD_LIGHT_RANGE * dark:
        raise NotACard(f"its middle is no flat card (light {bright / dark:.1f}x from its darkest to its brightest)")
    # the median of the averages, not of the pixels: a pixel's median snaps to one of its 8-bit codes
    # (0.9-1.5% of the light's colour on a JPEG card), an average of noisy codes does not
    rgb = channel_quantile(blocks, 0.5)
    kelvin, tint = kelvin_and_tint(tuple(float(c) for c in rgb))
    kelvin, tint = round(kelvin), round(tint, 4)    # a shoot's setting: the same file gives the same digest
    try:
        NeutralizeParams(kelvin=kelvin, tint=tint)      # a light the known-light path takes
        plausible = abs(tint) <= CARD_MAX_TINT
    except ValidationError:
        plausible = False
    if not plausible:
        raise NotACard(f"its colour reads {kelvin} K, tint {tint:+.3f}: no studio light (a coloured card?)")
    return kelvin, tint


def _adapt(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``m`` applied to every pixel, in bands of rows (``tasks.ops.by_rows``): five frame-sized
    temporaries (1.4 GB at 24 MP) become five the size of a band."""
    return by_rows(lambda part: _adapt_pixels(part, m), image)


def _adapt_pixels(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    out = torch.einsum("ij,bjhw->bihw", m, image).clamp(0, 1)
    # Clipped highlights carry no colour information: keep them white instead of
    # turning them cyan or pink with the correction.
    keep = ((image.amin(1, keepdim=True) - 0.95) / 0.04).clamp(0, 1)
    return keep * image + (1 - keep) * out


def neutralize(frame: Frame, params: NeutralizeParams) -> Frame:
    """Adapt the image from the estimated scene light to D65.

    Example:
        >>> cast = torch.tensor([1.3, 1.0, 0.7]).view(1, 3, 1, 1)
        >>> out = neutralize(Frame(torch.full((1, 3, 64, 64), 0.6) * cast), NeutralizeParams())
        >>> bool((out.image[0, :, 0, 0].max() - out.image[0, :, 0, 0].min()) < 0.03)
        True
    """
    image = frame.image
    readable = _readable(image, params) if params.kelvin is None else None
    if params.kelvin is not None:
        kelvin, tint, off_locus = params.kelvin, params.tint, 0.0
        white = image.new_tensor(blackbody_rgb(kelvin, tint))
    elif (share := float(readable[1].float().mean())) < params.min_readable:
        # A blown-out sweep or light box (or a black one) shows no colour: a cast the camera left
        # would pass as white. Leave the colour as shot and ask for the shoot's light.
        return frame.noted(f"neutralize: backdrop clipped or black on {1 - share:.0%} of the border, no light "
                           "to read; colour left as shot").flagged(
            "cast_uncertain", "neutralize: the backdrop is blown out (or black): its colour says nothing of the "
            "light; set the shoot's light ([stages.neutralize] kelvin in shoot.toml) or review")
    elif (texture := border_texture(image, params)) > params.max_texture:
        # A desk or fabric is no white reference: guessing from it turns a warm desk's
        # cast into a cold piece. Leave the colour as shot and ask for the shoot's light.
        return frame.noted(f"neutralize: textured backdrop ({texture:.3f}), no white reference; colour left as shot").flagged(
            "cast_uncertain", "neutralize: backdrop is textured, not a neutral sweep; set the shoot's light "
            "([stages.neutralize] kelvin in shoot.toml) or review")
    else:
        white, kelvin, tint, off_locus = estimate_illuminant(image, params, readable)
    if params.strength < 1:
        white = white ** params.strength
    if params.method == "rgb":
        m = torch.diag(white[1] / white)
    else:
        m = bradford_adaptation(white.double()).to(image.dtype)
        m = m * (white[1] / (m @ white)[1])  # keep green, as camera white balance does
    result = frame.replace(image=_adapt(image, m), plate=None if frame.plate is None else _adapt(frame.plate, m))
    result = result.noted(f"neutralize: light ~{kelvin:.0f} K, tint {tint:+.3f}")
    if off_locus > params.off_locus_flag:
        result = result.flagged(
            "cast_uncertain", f"neutralize: backdrop colour is {off_locus:.2f} off studio light; coloured backdrop?")
    return result
