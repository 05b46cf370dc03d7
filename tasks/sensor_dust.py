"""sensor_dust: shadows of dust on the sensor, found across a shoot and divided out.

Needs: linear RGB straight from ``develop`` (before any stage), and the other
images of the same shoot. Dust on the sensor casts a soft, faint shadow (a few
to 25 % darker, a few to 15 px at 1.5 MP) at the same place in every frame of
a shoot, on the backdrop and on the piece alike. One image cannot tell such a
shadow from a dark detail of the piece; the shoot can: a piece's own dark
details move between shots, sensor dust does not.

1. :func:`dust_evidence` (per image, cheap, any resolution): luminance at a
   fixed working size (long edge ``working_edge``) divided by its local
   surround (a normalised Gaussian convolution that leaves dark outliers out),
   so 1 means "as bright as around it" and 0.9 "10 % darker".
2. :func:`find_sensor_dust` (per shoot, on an even sample of its frames:
   :func:`survey_sample`): the per-pixel median of the evidence maps keeps what
   most frames share; a blob there counts as sensor dust when
   at least ``min_share`` of the frames show the same darkening at that place
   (shoots of fewer than ``min_images`` frames: none), on a plain surround
   that does not brighten as much (a still paper's mottle); past ``max_spots``
   it is a still paper's fibres and none is corrected (:class:`BackdropTexture`,
   which the flow says in a line). Each spot carries the
   shoot's median ratio around it: its measured gain.
3. :func:`remove_sensor_dust` divides that gain out (a flat-field correction).
   Dust multiplies the light, so this is exact on backdrop and piece alike,
   unlike filling the spot from its surroundings, which would erase the
   piece's detail under it. :func:`correct_sensor_dust` is the Frame wrapper:
   it also records ``masks['sensor_dust']`` and a note.

Spots are in normalised frame coordinates, so the evidence may be gathered on
a reduced decode (half-size RAW) and applied at full resolution; a survey's
spots are kept by evidence-map shape (:data:`SurveyFound`), and every frame of
the shoot, sampled or not, gets those of its shape (:func:`spots_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from tasks.frame import Frame, check_shape, luminance
from tasks.ops import gaussian_blur, resize


class SensorDustParams(BaseModel):
    """Shoot-level settings (``[stages.sensor_dust]`` in a preset or ``shoot.toml``)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="look for sensor dust across the shoot and correct it")
    working_edge: int = Field(768, ge=128, le=4096, description="long edge of the evidence maps, px")
    max_radius: float = Field(0.012, gt=0, le=0.05, description="largest spot radius, fraction of the long edge")
    min_darkening: float = Field(0.015, gt=0, le=0.5, description="darkening at a spot's centre in the shoot median")
    max_darkening: float = Field(0.45, gt=0, le=1, description="darker than this is not a dust shadow (they are faint)")
    min_share: float = Field(0.6, gt=0, le=1, description="share of the shoot's frames that must show the spot")
    max_texture: float = Field(0.2, ge=0, le=1, description="the surround may brighten by this share of the spot's "
                                                            "darkening (its brightest 5%): more is the backdrop's "
                                                            "own texture")
    max_spots: int = Field(50, ge=1, description="a survey finding more has found the backdrop's texture (a "
                                                 "paper's fibres), not dust: none is corrected")
    min_images: int = Field(3, ge=3, description="smaller shoots are not searched")
    survey_frames: int = Field(24, ge=3, le=1000, description="frames the survey reads, spread evenly over a "
                                                             "larger shoot")


class BackdropTexture(ValueError):
    """The survey found more spots than a sensor casts (``max_spots``): the backdrop's own texture
    stays put as dust does, so none is corrected."""


@dataclass(frozen=True, eq=False)
class Spot:
    """One sensor-dust spot, resolution-independent.

    x, y:     centre, fractions of the frame's width and height.
    r:        radius of the area the correction touches (the darkening has faded well inside
              it), fraction of the long edge.
    strength: darkening at the centre (0.1 = 10 % darker).
    share:    share of the shoot's frames that showed it.
    box:      (x0, y0, x1, y1) normalised frame area covered by ``gain``.
    gain:     (h, w) float32 multiplicative gain measured over ``box`` (1 outside the spot).
    """

    x: float
    y: float
    r: float
    strength: float
    share: float
    box: tuple[float, float, float, float]
    gain: np.ndarray


SurveyFound = dict[tuple[int, int], list[Spot]]   # a survey's spots by evidence-map shape (h, w)


def working_size(h: int, w: int, working_edge: int) -> tuple[int, int]:
    """``(h, w)`` of the evidence map for an ``h x w`` frame.

    Frames of one aspect ratio get one map size whatever their resolution (a half-size RAW
    decode and a full-size JPEG of the same camera agree), as long as their long edge is at
    least 3/4 of ``working_edge``; smaller frames keep their own size.
    """
    if max(h, w) < 0.75 * working_edge:
        return h, w
    scale = working_edge / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def survey_sample(frames: list, count: int) -> list:
    """At most ``count`` of a shoot's ``frames`` (in shooting order), spread evenly from the first to
    the last.

    Dust on the sensor stays put for the whole shoot, so an even sample shows it as well as every
    frame does; what grows with the shoot is the survey's time before the first image and the maps
    held to combine (1.6 MB each: a 1,000-frame shoot held 1.6 GB, and its sort several times that).

    Example:
        >>> survey_sample(list(range(10)), 4)
        [0, 3, 6, 9]
    """
    if len(frames) <= count:
        return list(frames)
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]


def spots_for(found: SurveyFound, height: int, width: int,
              params: SensorDustParams | None = None) -> list[Spot]:
    """The spots a frame of ``height x width`` gets from a survey's ``found`` (spots by evidence-map
    shape: frames of one size and orientation share a sensor position).

    Its group is the one whose map shape matches the frame's working size, give or take the pixel by
    which rounding can part a half-size RAW decode (the survey's) from the full frame; none if the
    survey saw no frame of its shape.
    """
    params = params or SensorDustParams()
    h, w = working_size(height, width, params.working_edge)
    return next((spots for (gh, gw), spots in found.items() if abs(gh - h) <= 1 and abs(gw - w) <= 1), [])


def dust_evidence(image: torch.Tensor, params: SensorDustParams | None = None) -> torch.Tensor:
    """Relative brightness map: luminance over its local surround, at the working size.

    Args:
        image: (1, 3, H, W) linear RGB in [0, 1] (any resolution of the frame), or (1, 1, H, W)
            its luminance (a grey decode, ``infra.imageio.read_source(grey=True)``).
        params: working size and largest spot radius.

    Returns:
        (1, 1, h, w) float32 on the image's device, ``h, w = working_size(H, W, ...)``;
        1 where a pixel is as bright as its surroundings, 0.9 where it is 10 % darker.

    Example:
        >>> img = torch.full((1, 3, 64, 96), 0.5); img[..., 30:34, 40:44] *= 0.8
        >>> ev = dust_evidence(img)
        >>> round(float(ev.min()), 2), round(float(ev[0, 0, 0, 0]), 2)
        (0.8, 1.0)
    """
    params = params or SensorDustParams()
    grey = image.ndim == 4 and image.shape[1] == 1
    check_shape(image, "image", channels=1 if grey else 3)
    h, w = working_size(image.shape[-2], image.shape[-1], params.working_edge)
    y = resize(image.float() if grey else luminance(image.float()), (h, w)).clamp_min(1e-4)
    sigma = max(3.0, 1.5 * params.max_radius * max(h, w))
    smooth = gaussian_blur(y, 1.0)
    surround = _wide_blur(y, sigma)
    for _ in range(2):  # leave the dark outliers (the dust itself, dark details) out of their surround
        keep = (smooth > surround * 0.99).to(y.dtype)
        blurred = _wide_blur(torch.cat([y * keep, keep], 1), sigma)
        support = blurred[:, 1:]
        surround = torch.where(support > 0.1, blurred[:, :1] / support.clamp_min(1e-3), surround)
    return (y / surround.clamp_min(1e-4)).clamp(0, 2)


def _wide_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur for a wide ``sigma``, computed on a grid a few times coarser (the result is
    smooth, so nothing is lost) and interpolated back."""
    f = max(1, int(sigma // 3))
    if f == 1:
        return gaussian_blur(x, sigma)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x, f, ceil_mode=True)
    small = gaussian_blur(small, math.sqrt(max(sigma**2 - f**2 / 12, 1.0)) / f)
    return F.interpolate(small, scale_factor=f, mode="bilinear", align_corners=False)[..., :h, :w]


def find_sensor_dust(evidence: list, params: SensorDustParams | None = None) -> list[Spot]:
    """Spots that darken the same place in most frames of a shoot.

    Args:
        evidence: one :func:`dust_evidence` map per frame (torch ``(1, 1, h, w)`` or numpy
            ``(h, w)``), all of one shape (frames of one size and orientation).
        params: thresholds.

    Returns:
        The spots, strongest first; ``[]`` for fewer than ``params.min_images`` maps.

    Raises:
        BackdropTexture: more than ``params.max_spots`` spots, the backdrop's texture: none is corrected.
    """
    params = params or SensorDustParams()
    maps = [np.asarray(m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor) else m,
                       np.float32).reshape(np.shape(m)[-2:]) for m in evidence]
    if len(maps) < params.min_images:
        return []
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"evidence maps must share one shape, got {sorted(shapes)}")
    h, w = maps[0].shape
    stack = np.stack(maps)
    dark = np.stack([cv2.GaussianBlur(1 - m, (0, 0), 0.8) for m in stack])   # per frame, lightly denoised
    # what half the frames agree on: the piece moves between shots, sensor dust does not
    consensus = shorth(dark, max(params.min_images, math.ceil(len(maps) / 2)))
    max_r = params.max_radius * max(h, w)
    reach = int(math.ceil(2 * max_r + 4))
    # how far a frame that sees plain backdrop strays from the consensus: the shoot's noise
    # floor (from the quietest quarter of the pixels, as a median absolute deviation)
    sub = (slice(None), slice(None, None, 4), slice(None, None, 4))
    floor = 2.1 * float(np.percentile(np.abs(dark[sub] - consensus[sub[1:]]), 25))

    # candidates: local maxima of the consensus darkening that stand out from their
    # neighbourhood, strongest first
    k = 2 * reach + 1
    local = cv2.blur(consensus, (k, k), borderType=cv2.BORDER_REFLECT)
    peaks = ((consensus >= cv2.dilate(consensus, np.ones((5, 5), np.uint8)))
             & (consensus - local > params.min_darkening) & (consensus > params.min_darkening))
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-consensus[ys, xs])
    spots: list[Spot] = []
    for iy, ix in zip(ys[order], xs[order]):
        if any(math.hypot(ix + 0.5 - s.x * w, iy + 0.5 - s.y * h) <= s.r * max(h, w) for s in spots):
            continue  # inside a spot already kept
        spot = _measure(stack, dark, consensus, int(ix), int(iy), reach, max_r, floor, params)
        if spot is not None:
            spots.append(spot)
            if len(spots) > params.max_spots:
                # the backdrop's texture: a paper's fibres stay put and only darken, as dust does, but a
                # sensor casts a few dozen shadows between cleanings, not a hundred (divided out of a frame
                # whose piece lies over a fibre, each would brighten the piece by the fibre's darkening)
                raise BackdropTexture(f"more than {params.max_spots} spots (max_spots) stay put from frame to "
                                      f"frame: the backdrop's texture, not sensor dust; none corrected")
    return spots


def shorth(stack: np.ndarray, k: int) -> np.ndarray:
    """Per pixel, the mean of the ``k`` values (of ``stack``'s first axis) that lie closest together.

    The "shorth" location estimate (Andrews et al. 1972, *Robust Estimates of Location*): it
    follows the majority cluster and ignores up to ``n - k`` outliers on either side, where a
    median drifts towards them.
    """
    n = stack.shape[0]
    k = min(max(1, k), n)
    # a pixel's values side by side: the survey's one call, in a fresh process, 0.74 -> 0.31 s on 22 maps
    # of 768 x 512 (the same once its memory is warm)
    s = np.sort(stack.reshape(n, -1).T, axis=1)
    spread = s[:, k - 1:] - s[:, : n - k + 1]
    start = np.argmin(spread, axis=1)[:, None]
    csum = np.concatenate([np.zeros_like(s[:, :1]), np.cumsum(s, axis=1)], axis=1)
    total = np.take_along_axis(csum, start + k, 1) - np.take_along_axis(csum, start, 1)
    return (total[:, 0] / k).reshape(stack.shape[1:])


def _measure(ratios: np.ndarray, dark: np.ndarray, consensus: np.ndarray, ix: int, iy: int, reach: int,
             max_r: float, floor: float, params: SensorDustParams) -> Spot | None:
    """Test one candidate peak; return it as a spot with its extent and gain patch, or None.

    Darkening is measured against the ring just outside the window (the local baseline), so a
    spot on a broad shading counts only with its own darkening. The share of frames is taken
    over the frames that could show it: those whose surroundings of the spot agree with the
    shoot's consensus (plain backdrop or smooth metal there, not the piece's texture).
    """
    n, h, w = dark.shape
    x0, x1 = max(0, ix - reach), min(w, ix + reach + 1)
    y0, y1 = max(0, iy - reach), min(h, iy + reach + 1)
    md = consensus[y0:y1, x0:x1]
    yy, xx = np.arange(y0, y1, dtype=np.float32)[:, None], np.arange(x0, x1, dtype=np.float32)[None]
    weights = np.clip(md - 0.5 * md[iy - y0, ix - x0], 0, None) * (np.hypot(xx - ix, yy - iy) <= 2)
    cx, cy = float((xx * weights).sum() / weights.sum()), float((yy * weights).sum() / weights.sum())
    dist = np.hypot(xx - cx, yy - cy)
    outer = dist >= reach - 2
    if outer.sum() < 8:
        return None
    base = float(_median(md[outer]))
    peak = float(md[dist <= 1].max()) - base
    if not params.min_darkening <= peak <= params.max_darkening:
        return None
    # radial profile of the darkening above the baseline
    bins = np.minimum((dist * 2).astype(np.int64), 2 * reach).ravel()   # half-pixel rings
    sums = np.bincount(bins, (md - base).ravel(), 2 * reach + 2)
    counts = np.bincount(bins, None, 2 * reach + 2)
    radii = np.arange(0, reach - 2, 0.5)
    k = np.arange(len(radii))
    prof = (sums[k] + sums[k + 1]) / np.maximum(counts[k] + counts[k + 1], 1)   # mean over [r, r + 1)
    below_half = np.nonzero(prof < peak / 2)[0]
    faint = np.nonzero(prof < 0.1 * peak)[0]
    if not len(below_half) or not len(faint):
        return None
    r_half, r_out = float(radii[below_half[0]]) + 0.5, float(radii[faint[0]]) + 1.0
    if r_half > 1.3 * max_r or r_out > 1.6 * max_r + 2 or min(cx, cy, w - 1 - cx, h - 1 - cy) < r_out:
        return None  # too large for a dust shadow, or cut by the frame's edge
    # a compact blob: on the ring at 1.5 r_out almost nothing is as dark as half the peak (not a ridge)
    ring = (dist >= 1.5 * r_out) & (dist < 1.5 * r_out + 1.5)
    if ring.any() and ((md[ring] - base) > peak / 2).mean() > 0.1:
        return None
    # not the backdrop's texture: a paper's mottle stays put in a still camera's frames as dust does, but it
    # brightens around a dark blob as much as it darkens, where dust only darkens a plain surround (shoots of
    # 1536 px with dust: its brightest 5% under 0.14 of the spot's darkening; the false spots a still coloured
    # paper of the simulator gave: 0.23 and up)
    if float(np.percentile(base - md[dist > r_out + 1], 95)) > params.max_texture * peak:
        return None
    # present, with the same strength, in most of the frames that could show it
    core = dist <= max(r_half, 1.0)
    around = (dist > r_out + 1) & (dist < r_out + 1 + max(3.0, r_out))
    frames = dark[:, y0:y1, x0:x1]
    # a frame shows the spot where the whole window around it is plain, not only the ring next to it: a
    # still desk's grain around a knot is the same in every frame, as dust is, and dust hides in grain
    # (the window's spread is asked only of the frames plain next to the spot, and only if enough are)
    flat = max(3 * floor, 0.005)
    seeing = _spread(frames[:, around]) <= flat
    if seeing.sum() < params.min_images:
        return None
    seeing[seeing] = _spread(frames[seeing][:, dist > r_out + 1]) <= flat
    if seeing.sum() < params.min_images:
        return None
    local = _median(frames[:, around])          # each frame's own baseline next to the spot
    per_frame = frames[:, core].mean(axis=1) - local
    typical = float(_median(per_frame[seeing]))
    agree = (np.abs(per_frame - typical) <= max(0.25 * typical, 3 * floor)) & seeing
    share = float(agree.sum() / seeing.sum())
    if (agree.sum() < params.min_images or share < params.min_share
            or typical < max(0.6 * params.min_darkening, 5 * floor)):
        return None
    # gain patch: mean ratio over the agreeing frames, each over its local baseline, tapered to 1
    win = ratios[agree, y0:y1, x0:x1]
    ratio = (win / np.maximum(_median(win[:, around]), 1e-3)[:, None, None]).mean(axis=0)
    edge = r_out + max(2.0, 0.5 * r_out)
    taper = np.clip((edge - dist) / (edge - r_out), 0, 1)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    gain = 1 - (1 - np.clip(ratio, 0.3, 1.0)) * taper
    return Spot(x=(cx + 0.5) / w, y=(cy + 0.5) / h, r=(edge + 2) / max(h, w), strength=peak, share=share,
                box=(x0 / w, y0 / h, x1 / w, y1 / h), gain=gain.astype(np.float32))


def _spread(values: np.ndarray) -> np.ndarray:
    """Per frame (first axis), the median absolute deviation of ``values`` from their median."""
    return _median(np.abs(values - _median(values)[:, None]))


def _median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1)``, to the bit, without its checks: the survey's combine takes
    thousands of medians of a few hundred values, where those checks cost more than the median."""
    n = values.shape[-1]
    half = n // 2
    if n == 0:
        return np.full(values.shape[:-1], np.nan, values.dtype)
    if n % 2:
        return np.partition(values, half, axis=-1)[..., half]
    part = np.partition(values, (half - 1, half), axis=-1)
    return (part[..., half - 1] + part[..., half]) / 2


def _pixel_box(spot: Spot, h: int, w: int) -> tuple[int, int, int, int]:
    bx0, by0, bx1, by1 = spot.box
    return (max(0, math.floor(bx0 * w)), max(0, math.floor(by0 * h)),
            min(w, math.ceil(bx1 * w)), min(h, math.ceil(by1 * h)))


def sensor_dust_gain(spots: list[Spot], h: int, w: int, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 1, h, w) multiplicative gain of the spots at an ``h x w`` frame (1 away from them).

    Each spot's measured gain patch is resampled (bicubic) onto the frame's pixel grid.
    """
    ref = like if like is not None else torch.empty(0)
    gain = torch.ones((1, 1, h, w), dtype=torch.float32, device=ref.device)
    for spot in spots:
        x0, y0, x1, y1 = _pixel_box(spot, h, w)
        if x0 >= x1 or y0 >= y1:
            continue
        ph, pw = spot.gain.shape
        bx0, by0, bx1, by1 = spot.box
        # frame pixel centres -> patch pixel-index coordinates -> grid_sample's [-1, 1] (align_corners)
        u = ((torch.arange(x0, x1, dtype=torch.float32) + 0.5) / w - bx0) / (bx1 - bx0) * pw - 0.5
        v = ((torch.arange(y0, y1, dtype=torch.float32) + 0.5) / h - by0) / (by1 - by0) * ph - 0.5
        gx = u / max(pw - 1, 1) * 2 - 1
        gy = v / max(ph - 1, 1) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None].to(gain.device)
        # resample the darkening (0 away from the spot, so the gain there stays exactly 1)
        patch = torch.from_numpy(np.ascontiguousarray(1 - spot.gain))[None, None].to(gain.device)
        up = F.grid_sample(patch, grid, mode="bicubic", padding_mode="border", align_corners=True)
        gain[..., y0:y1, x0:x1] *= 1 - up.clamp(0.0, 0.7)
    return gain.to(ref.dtype) if like is not None else gain


def remove_sensor_dust(image: torch.Tensor, spots: list[Spot]) -> torch.Tensor:
    """Divide the spots' gain out of ``image`` (B, 3, H, W), linear RGB; same device and dtype.

    Example:
        >>> remove_sensor_dust(torch.full((1, 3, 8, 8), 0.5), []).shape
        torch.Size([1, 3, 8, 8])
    """
    check_shape(image, "image", channels=3)
    if not spots:
        return image
    gain = sensor_dust_gain(spots, image.shape[-2], image.shape[-1], like=image)
    return (image / gain).clamp(0, 1)


def spots_mask(spots: list[Spot], h: int, w: int, *, grow: float = 1.0, like: torch.Tensor | None = None
               ) -> torch.Tensor:
    """(1, 1, h, w) float mask of the spots' discs (every pixel the correction touches, and a
    pixel more), radius scaled by ``grow``."""
    ref = like if like is not None else torch.empty(0)
    yy = (torch.arange(h, dtype=torch.float32, device=ref.device) + 0.5)[:, None]
    xx = (torch.arange(w, dtype=torch.float32, device=ref.device) + 0.5)[None, :]
    mask = torch.zeros((h, w), dtype=torch.float32, device=ref.device)
    long_edge = max(h, w)
    for s in spots:
        r = s.r * long_edge * grow + 1
        mask = torch.maximum(mask, (((xx - s.x * w) ** 2 + (yy - s.y * h) ** 2) <= r * r).float())
    mask = mask[None, None]
    return mask.to(ref.dtype) if like is not None else mask


def correct_sensor_dust(frame: Frame, spots: list[Spot]) -> Frame:
    """Frame wrapper: divide the shoot's sensor dust out, record ``masks['sensor_dust']`` and a note."""
    if not spots:
        return frame
    h, w = frame.image.shape[-2:]
    image = remove_sensor_dust(frame.image, spots)
    mask = spots_mask(spots, h, w, like=frame.image)
    return frame.replace(image=image).with_masks(sensor_dust=mask).noted(
        f"sensor dust: {len(spots)} spot{'s' if len(spots) != 1 else ''} corrected")
