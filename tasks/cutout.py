"""cutout: the piece's mask and a soft alpha matte, at full resolution.

Needs: neutralized linear RGB of a studio shot.

Sweeps and paper: the backdrop is modelled as a smooth surface (a robust
quadratic fit, so gradients and vignetting are part of it). Piece is what
departs from it by more than the noise allows, plus flat metal that departs
only faintly (found on a 1.5 px average, counting only what a grey shadow
cannot explain), thin lines that stand out from their surroundings, and, in a
noisy frame, lines whose ridge stands out of the noise where no pixel of them
does (a chain at ISO 3200: ``ridge_lines``; added last, so they never close an
opening). Grey darkenings of the backdrop that the segmentation
network (below) calls background, that fade into it, or that darken it evenly (a hard shadow's
umbra) are shadows and leave the mask. Enclosed
regions that do not show the plain backdrop are
filled as metal; ring interiors and gaps between links stay holes, and a
link's gap the faint test's average closed over opens again where each of
its pixels is the backdrop in the chain's light shade, ringed by coloured
wire (``_link_gaps``). Small holes
deep in solid piece that the network, read again on the piece's own box, calls
piece, and that differ from the backdrop, are a facet or a face cut out and are
filled (``_fill_facets``). Small
components (dust on the sweep) are dropped, and so are the small islands the
matte makes of them when a 1 px thread joined them to the piece. Alpha in the edge band comes
from difference matting against the colour just outside the piece, so a
shadow or a gap is what the edge is mixed with, and edge pixels are
decontaminated: their colour becomes the estimated piece colour, so no
backdrop fringe survives compositing onto white.

With the shoot's clean plate (a frame of the empty backdrop, ``Frame.plate``)
the plate is the backdrop: no surface is fitted, and even a desk's grain is
known, so every backdrop takes the sweep path. There a second network,
``models/platenet``, reads the shot and the plate together and judges what
changed: grey or mirroring metal darkens the plate as its shadow does, and in
camera noise no per-pixel test tells them apart. What it calls piece is piece
inside its edge, and near its edge where the pixel departs from the plate;
no part of it is dropped as a shadow.

Cluttered backdrops (desk, hand, fabric) do not fit a smooth surface. There
a small segmentation network (``models/segnet``, trained on simulator
composites) gives the piece's probability at ~384 px; the edge is refined at
full resolution by the same matting. The stage flags ``mask_suspect`` when
the network is unsure of too much of the piece, and QA routes the image to
a person. When the network finds no piece at all on a backdrop that only
camera noise kept from fitting (``_fit_error``), the backdrop model looks
after all: a fine chain at ISO 3200 is under a pixel at the network's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks import regions
from tasks.color import LUMINANCE, linear_to_srgb, srgb_to_linear
from tasks.compose import grow, grown_box
from tasks.frame import Frame, luminance
from tasks.ops import (SAMPLE_ABOVE, box_mean, dilate, erode, fill_holes, gaussian_blur, masked_blur, quantiles, resize,
                       resize_at, row_bands, shrunk_size)


class CutoutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_size: int = Field(384, ge=64, le=2048, description="long edge of the image the backdrop is fitted on")
    fg_sigmas: float = Field(8.0, gt=0, description="departure from the backdrop, in noise sigmas, that is surely piece")
    bg_sigmas: float = Field(3.0, gt=0, description="departure below which a pixel is surely backdrop")
    min_contrast: float = Field(0.02, gt=0, description="floor of the thresholds in sRGB units, for very clean backdrops")
    hole_plain_share: float = Field(0.3, ge=0, le=1, description="an enclosed region is a hole when this share of it shows the plain backdrop")
    min_patch: float = Field(0.005, ge=0, description="smallest enclosed region (fraction of the piece's area) that may be filled as metal")
    min_patch_frame: float = Field(3e-4, ge=0, description="and at least this fraction of the frame")
    pinhole_frame: float = Field(4e-5, ge=0, description="holes up to this fraction of the frame whose colour is "
                                 "nearer the metal around them than the backdrop are highlights, not holes")
    network_checks: bool = Field(True, description="ask the network about shadows and enclosed regions on sweeps")
    edge_sigmas: float = Field(2.0, gt=0, description="gradient (1 px Gaussian, in noise sigmas) that is surely an edge of "
                               "the photo (QA asks for 4 before it trusts an outline)")
    min_edge_support: float = Field(0.5, ge=0, le=1, description="a part whose outline runs on an edge of the photo for "
                                    "less than this share fades into the backdrop: fall-off, a shadow's fade")
    deepest_shadow: float = Field(0.3, gt=0, le=1, description="darkest a shadow makes the backdrop (linear ratio)")
    shadow_colour: float = Field(0.06, ge=0, le=1, description="on the sweep path's fitted backdrop (not a plate), a "
                                 "shadow's colour may depart from a grey darkening of the backdrop by this share of its "
                                 "value on a 1.5 px average (fill light of another colour, a camera's tone curve), away "
                                 "from thin lines")
    shadow_p: float = Field(0.25, gt=0, lt=1, description="a grey darkening the network gives less than this piece probability is a shadow")
    unseen_p: float = Field(0.1, ge=0, le=1, description="a part beside the piece that the network gives less than "
                            "this piece probability and that no pixel of (under 1%) departs surely from the backdrop "
                            "is the backdrop model's misfit or JPEG blocks read as faint metal: dropped")
    shadow_net_width: float = Field(2.0, ge=0, description="but not one narrower than this many of SegNet's pixels, "
                                    "in a part of the mask that closes loops, with nothing it calls piece within as "
                                    "many of that part (or of itself, when it closes a link) (a chain's wire at its "
                                    "384 px: it sees the backdrop around); PlateNet's verdict always counts")
    umbra_spread: float = Field(0.07, ge=0, description="a grey darkening this even (shade's 10-90% spread over its "
                                "median, on a 1.5 px average) is a hard shadow's umbra, whatever the network says")
    umbra_area: float = Field(2.5e-3, ge=0, description="smallest umbra (fraction of the frame) judged by its evenness")
    line_sigmas: float = Field(5.0, gt=0, description="contrast with its surroundings, in noise sigmas, that makes a thin line piece")
    ridge_sigmas: float = Field(5.0, gt=0, description="a ridge or valley of the departure from the backdrop this strong, in "
                                "its own noise sigmas, is a line of the piece (wire, links, prongs in a noisy frame)")
    ridge_grow_sigmas: float = Field(3.0, gt=0, description="and the line goes on while its ridge stays this strong")
    ridge_noise: float = Field(0.02, ge=0, description="ridges are looked for when the backdrop's noise (sRGB) is at least "
                               "this: below it the per-pixel tests see a wire, and the ridges' Gaussian would only widen it")
    ridge_scale: float = Field(1.8, gt=0, description="px of the Gaussian the ridges are measured on")
    ridge_min_area: float = Field(4e-5, ge=0, description="smallest line (fraction of the frame): noise makes only specks")
    ridge_size: int = Field(2000, ge=64, description="long edge ridges are looked for at (a larger frame is shrunk: "
                            "its wire stays a few px wide and the noise drops)")
    fit_smooth: float = Field(2.0, ge=0, description="px (at model_size) of the Gaussian the backdrop fit's error is read "
                              "on past camera noise (``_fit_error``), when the network finds no piece")
    fit_noise_share: float = Field(0.6, ge=0, le=1, description="the fit's residual is camera noise when its fit_smooth "
                                   "average keeps at most this share of it")
    keep_ratio: float = Field(0.02, ge=0, le=1, description="drop components smaller than this fraction of the largest")
    min_area: float = Field(2e-4, ge=0, description="drop components smaller than this fraction of the frame")
    band: int = Field(2, ge=1, le=16, description="half-width in px of the edge band where alpha is fractional")
    work_size: int | None = Field(3000, ge=64, description="long edge (px) the mask is decided at: a larger frame "
                                  "(a 24 MP back's 6000) is shrunk to it for every decision and only its alpha is "
                                  "matted at full size, around the decided outline; None: decided at full size")
    max_backdrop_residual: float = Field(0.01, gt=0, description="backdrop fit error (sRGB) above which the backdrop is called cluttered")
    backdrop_degree: int = Field(4, ge=2, le=6, description="highest degree of the backdrop's polynomial: a sweep the "
                                 "quadratic does not fit (strong fall-off, vignetting, a horizon band) is fitted again "
                                 "a degree higher, up to this, before it is called cluttered; 2: the quadratic alone")
    fit_local: float = Field(1 / 16, ge=0, le=1, description="the fit error that chooses the path is read after the "
                             "polynomial's departure from the backdrop's own pixels, averaged over a Gaussian of this "
                             "share of the fit's long edge, is added to it (a sweep's bend, a vignette's corners: "
                             "smooth shapes no low-degree polynomial follows, not clutter); 0: the polynomial's error")
    method: Literal["auto", "backdrop", "network"] = Field(
        "auto", description="backdrop model (sweeps), segmentation network (clutter), or auto by the backdrop fit")
    network_weights: str | None = Field(None, description="segnet checkpoint; None = the weights shipped in models/segnet")
    network_fine_size: int | None = Field(640, ge=64, description="on the network path SegNet also reads the frame "
                                          "at this long edge (px) and may add what it finds there (a chain's wire, "
                                          "lost at its 384), never closing an opening the 384 read sees; None: off")
    plate_network: bool = Field(True, description="with a clean plate, let PlateNet (models/platenet) tell the piece "
                                "from its shadow")
    plate_network_weights: str | None = Field(None, description="PlateNet checkpoint; None = the weights shipped in "
                                              "models/platenet")
    facet_p: float = Field(0.9, gt=0, le=1, description="an enclosed hole SegNet, read on the piece's box, calls piece "
                           "with this mean probability may be a facet or a face cut out (``_fill_facets``)")
    facet_max_share: float = Field(0.01, ge=0, le=1, description="largest such hole filled, per piece area")
    facet_net_px: float = Field(4.0, ge=0, description="smallest, in the network's pixels: a smaller hole (a link's gap) "
                                "it cannot resolve, and its probability there is the wire's around")
    facet_ring: float = Field(1.5, ge=0, description="piece around such a hole, in hole radii, that makes it a hole in "
                              "solid piece")
    facet_shade: float = Field(0.9, ge=0, description="and a hole darker than this share of the backdrop's light may be "
                               "an opening in the piece's own shadow: left open")
    facet_network: bool = Field(False, description="on the sweep path, let HoleNet (models/holenet) fill the holes it "
                                "calls a facet or a face cut out (``_fill_learned_facets``); off: on real photos it "
                                "also fills openings (README, \"HoleNet\")")
    facet_network_p: float = Field(0.9, gt=0, le=1, description="HoleNet's probability at which a hole is filled as a facet")
    facet_network_share: float = Field(0.02, ge=0, le=1, description="largest hole HoleNet is asked about, per piece area "
                                       "(a ring's inside is far larger)")
    facet_network_weights: str | None = Field(None, description="HoleNet checkpoint; None = the weights shipped in "
                                              "models/holenet")
    max_unsure: float = Field(0.25, ge=0, le=1, description="network: unsure pixels (0.2 < p < 0.8) per piece pixel above which the mask is suspect")


def _design(h: int, w: int, device, dtype, degree: int = 2) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, h, device=device, dtype=dtype),
                          torch.linspace(-1, 1, w, device=device, dtype=dtype), indexing="ij")
    if degree == 2:
        return torch.stack([torch.ones_like(x), x, y, x * y, x * x, y * y], -1).reshape(-1, 6)
    terms = [x ** i * y ** j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return torch.stack(terms, -1).reshape(-1, len(terms))


def frame_border(h: int, w: int, device, box: tuple[slice, slice] | None = None) -> torch.Tensor:
    """(1, 1, H, W) bool: the frame's outer twelfth, where the backdrop is seen (on ``box`` only: its
    part of that mask, without making the whole frame's)."""
    rows, cols = box or (slice(0, h), slice(0, w))
    bw = max(2, min(h, w) // 12)
    y = torch.arange(rows.start, rows.stop, device=device)[:, None]
    x = torch.arange(cols.start, cols.stop, device=device)[None, :]
    return ((y < bw) | (y >= h - bw) | (x < bw) | (x >= w - bw))[None, None]


def fit_backdrop(small: torch.Tensor, iterations: int = 4, degree: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust polynomial surface per channel; returns (backdrop, backdrop mask) at ``small``'s size. The
    quadratic is fitted from the frame's border out; a higher ``degree`` is then fitted on the pixels the
    quadratic calls backdrop (fitted from the border alone, its extra terms would swing over the piece)."""
    _, c, h, w = small.shape
    # in float64: float32's least squares differ in the last bits from call to call (the BLAS kernels
    # follow the buffers' alignment), and a mask pixel on a threshold then flips between runs
    a = _design(h, w, small.device, torch.float64)
    target = small[0].reshape(c, -1).T.double()
    use = frame_border(h, w, small.device).reshape(-1)
    stages = [a] * iterations
    if degree != 2:
        stages += [_design(h, w, small.device, torch.float64, degree)] * 3
    for a in stages:
        coef = torch.linalg.lstsq(a[use], target[use]).solution
        resid = (target - a @ coef).abs().max(1).values
        scale = 1.4826 * resid[use].median().clamp(min=1e-4)
        use = resid < 4 * scale
    backdrop = (a @ coef).T.reshape(1, c, h, w).to(small.dtype)
    return backdrop, use.reshape(1, 1, h, w).to(small.dtype)


def _fit_error(residual: torch.Tensor, backdrop: torch.Tensor, params: CutoutParams) -> tuple[float, float]:
    """Mean departure of the backdrop's own pixels (``backdrop``: (1, 1, h, w) 0/1) from the fitted
    surface, largest channel: as read, and read past camera noise. When most of it is noise (its
    ``fit_smooth`` px average, over the backdrop's pixels only, keeps at most ``fit_noise_share`` of
    it), the second is read on that average, else it is the first. A desk's grain or a fabric's
    weave is not pixel-sized, so its average keeps more (0.66-0.94 on the training worlds, where the
    noise of plain sweeps and papers keeps 0.31-0.6)."""
    at = backdrop > 0.5
    if not at.any():
        return 1.0, 1.0
    raw = float(residual.abs().amax(1, keepdim=True)[at].mean())
    smooth, _ = masked_blur(residual, backdrop, params.fit_smooth, floor=1e-3)
    averaged = float(smooth.abs().amax(1, keepdim=True)[at].mean())
    return raw, averaged if averaged <= params.fit_noise_share * raw else raw


def fitted_sweep(enc: torch.Tensor, params: CutoutParams) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The smooth backdrop fitted to ``enc`` (sRGB, shrunk to ``model_size``): the backdrop and the pixels
    it was fitted on at that size, its fit error and the error past camera noise (``_fit_error``).

    The errors are read once the backdrop is let follow its own pixels locally (``fit_local``): they
    decide whether the frame is a sweep, and a sweep's bend or a vignette a quartic misses by 0.01-0.02
    is as smooth a backdrop as one it fits (on the wide world those went to the network, which drops a
    chain's wire and keeps its shadow). The backdrop handed on stays the polynomial: followed so
    closely it takes in an acrylic riser's reflection and soft shadows beside the piece."""
    h, w = enc.shape[-2:]
    scale = params.model_size / max(h, w)
    small = resize(enc, (max(8, round(h * scale)), max(8, round(w * scale))))
    backdrop, fitted_on = fit_backdrop(small)
    errors = _fit_error(small - backdrop, fitted_on, params)
    for degree in range(3, params.backdrop_degree + 1):
        if errors[0] <= params.max_backdrop_residual:
            break
        backdrop, fitted_on = fit_backdrop(small, degree=degree)
        errors = _fit_error(small - backdrop, fitted_on, params)
    if params.fit_local > 0:
        followed, on = _follow_locally(small, backdrop, fitted_on, params.fit_local * max(small.shape[-2:]))
        errors = _fit_error(small - followed, on, params)
    return (backdrop, fitted_on, *errors)


def _follow_locally(small: torch.Tensor, backdrop: torch.Tensor, fitted_on: torch.Tensor, sigma: float,
                    iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``backdrop`` plus its departure from ``small`` on the backdrop's own pixels (``fitted_on``), averaged
    over a Gaussian of ``sigma`` px (normalised convolution: the piece's pixels are not read), and the
    pixels of ``fitted_on`` that fit it, robustly as ``fit_backdrop`` chooses them. Where the Gaussian
    reads little backdrop (deep under a large piece) the correction fades to the polynomial's."""
    use = fitted_on
    for _ in range(iterations):
        correction, weight = masked_blur(small - backdrop, use, sigma, floor=1e-3)
        followed = backdrop + correction * (weight / (weight + 0.05))
        resid = (small - followed).abs().amax(1, keepdim=True)
        scale = 1.4826 * resid.masked_select(use > 0.5).median().clamp(min=1e-4)
        use = ((resid < 4 * scale) & (fitted_on > 0.5)).to(small.dtype)
    return followed, use


def _keep_components(mask: np.ndarray, params: CutoutParams) -> np.ndarray:
    n, labels, stats, _ = regions.parts(mask)
    if n <= 1:
        return np.zeros_like(mask)
    areas = stats[1:, cv2.CC_STAT_AREA]
    floor = max(params.keep_ratio * areas.max(), params.min_area * mask.size)
    keep = np.zeros(n, dtype=np.uint8)
    keep[1:] = areas >= floor
    return keep[labels]


# Noise left after a sigma-1.5 px Gaussian: 1 / (2 sqrt(pi) 1.5).
SMOOTH_NOISE = 0.19

# The per-pixel scores below are made in bands of rows, so their float temporaries are the size of a
# band, not of the frame (a 24 MP plane is 96 MB); each band reads rows of context as far as its
# widest filter reaches (a 1.5 px Gaussian: 5 rows), so the masks are the whole frame's, pixel for pixel.
BAND_ROWS, BAND_HALO = 256, 8


def _bool_mask(like: torch.Tensor) -> torch.Tensor:
    return torch.empty((like.shape[0], 1, *like.shape[-2:]), dtype=torch.bool, device=like.device)


def _shadow_scores(image, enc, backdrop, sigma, params: CutoutParams,
                   tolerance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """How much darker than the backdrop each pixel is (``shade``: linear luminance ratio), and what
    of its colour a grey shadow on the backdrop cannot explain, in noise sigmas per pixel and on a
    1.5 px average, as four masks:

    ``faint``: flat metal only a little brighter or more coloured than the backdrop. Per-pixel
    thresholds miss it in a noisy (dark, strongly white-balanced) frame; averaged over 1.5 px the
    noise drops ~5x. Only departures a grey shadow cannot make count (brighter, or another hue), so
    the soft contact shadow around the piece is not pulled in.
    ``explained``: a grey darkening explains the pixel on the 1.5 px average.
    ``tinted``: it does, but for a departure in each channel under ``tolerance`` of the backdrop's
    value there (``CutoutParams.shadow_colour``); None when ``tolerance`` is 0.
    ``grey``: a grey darkening explains the pixel itself, not only its average (what a chain's link gap
    shows, where the average takes the wire's colour).

    In bands of rows, a channel at a time, and only the masks kept (``BAND_ROWS``).
    """
    shade = enc.new_empty((enc.shape[0], 1, *enc.shape[-2:]))
    faint, explained, tinted = _bool_mask(enc), _bool_mask(enc), _bool_mask(enc) if tolerance else None
    grey = _bool_mask(enc)
    for own, read, keep in row_bands(enc.shape[-2], BAND_ROWS, BAND_HALO):
        masks = _band_shadow_scores(image[..., read, :], enc[..., read, :], backdrop[..., read, :], sigma, params,
                                    tolerance)
        for whole, band in zip((shade, faint, explained, tinted, grey), masks):
            if whole is not None:
                whole[..., own, :] = band[..., keep, :]
    return shade, faint, explained, tinted, grey


def _shade(image, backdrop) -> torch.Tensor:
    """Linear luminance of the image over the backdrop's: how much darker (< 1) a pixel is."""
    lit = back = None
    for c in range(image.shape[1]):
        term = image[:, c:c + 1] * LUMINANCE[c]
        back_term = srgb_to_linear(backdrop[:, c:c + 1].clamp(0, 1)).mul_(LUMINANCE[c])
        lit = term if lit is None else lit.add_(term)
        back = back_term if back is None else back.add_(back_term)
    return lit.div_(back.clamp_(min=1e-4))


def _unexplained(enc, backdrop, shadowed, c: int) -> torch.Tensor:
    """Channel ``c`` of what a grey shadow (``shadowed``: the shade, at most 1) on the backdrop leaves of
    the pixel, sRGB."""
    return enc[:, c:c + 1] - linear_to_srgb(srgb_to_linear(backdrop[:, c:c + 1].clamp(0, 1)).mul_(shadowed))


# A channel's shadow test takes the noise the shade carries into it when that is this many times its own:
# a channel clipped in the backdrop (1.45-4x on the training worlds' light boxes); everywhere else on them
# it is within 20% of the channel's own (1.0-1.19), and the channel's own stays (see ``_shadow_sigma``)
CARRIED_NOISE = 1.3
SHADOW_SAMPLE = 200_000


def _shadow_sigma(image, enc, backdrop, at: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The shadow test's noise per channel, (1, C, 1, 1): ``sigma``, or the spread of what a grey
    shadow leaves unexplained over the backdrop's reference pixels ``at`` (flat indices) where that is
    over ``CARRIED_NOISE`` times it. A channel clipped in the backdrop (a warm light on a light box: red
    at 1) has no noise of its own, but the shade it is tested with is read off the other channels and
    carries their noise into it: at ISO 6400 that read a whole light box as faint metal. (Taking the
    carried noise in every channel, however close to its own, cost the validation family's studio
    set faces of three rings the faint test had found.)"""
    if at.numel() < 16:
        return sigma
    at = at[:: at.numel() // SHADOW_SAMPLE + 1]     # a spread is read well enough on 200,000 (0.4 -> 0.1 s at 24 MP)
    pick = lambda t: t[0].reshape(t.shape[1], -1)[:, at][None, :, None]     # noqa: E731  (1, C, 1, N)
    image_at, enc_at, backdrop_at = pick(image), pick(enc), pick(backdrop)
    shadowed = _shade(image_at, backdrop_at).clamp_(0, 1)
    # (read as against a plate: where the pixel is as clipped as the backdrop, or brighter, nothing is
    # left, the median reads ~0 and the 90th percentile tells the spread)
    carried = torch.stack([_spread(_unexplained(enc_at, backdrop_at, shadowed, c).abs_().reshape(-1), quantized=True)
                           for c in range(enc.shape[1])]).view(1, -1, 1, 1).to(sigma)
    return torch.where(carried > CARRIED_NOISE * sigma, carried, sigma)


def _band_shadow_scores(image, enc, backdrop, sigma, params: CutoutParams,
                        tolerance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_shadow_scores`` on one band of rows (its own rows and their context)."""
    shade = _shade(image, backdrop)
    shadowed = shade.clamp(0, 1)
    pixel_off = smooth_off = explained = tinted = None
    for c in range(enc.shape[1]):
        unexplained = _unexplained(enc, backdrop, shadowed, c)
        off = (unexplained / sigma[:, c:c + 1]).abs_() > params.bg_sigmas
        smooth = gaussian_blur(unexplained, 1.5)
        zs = (smooth / (SMOOTH_NOISE * sigma[:, c:c + 1])).abs_()
        pixel_off = off if pixel_off is None else pixel_off.logical_or_(off)
        smooth_off = zs > params.fg_sigmas if smooth_off is None else smooth_off.logical_or_(zs > params.fg_sigmas)
        explained = zs < params.fg_sigmas if explained is None else explained.logical_and_(zs < params.fg_sigmas)
        if tolerance:
            within = smooth.abs_() < tolerance * backdrop[:, c:c + 1]
            tinted = within if tinted is None else tinted.logical_and_(within)
    return (shade, smooth_off.logical_and_(pixel_off), explained, tinted if tinted is None else tinted.logical_or_(explained),
            ~pixel_off & (shade < 1))


# the least noise a clean 8-bit file's lines are told from: its ripples (a JPEG's) are 1-2 levels, and a blown or
# retouched backdrop, with no noise of its own, puts the noise the tests read under them (``min_contrast`` /
# ``fg_sigmas``: 0.6 of a level)
CLEAN_FILE_NOISE = 1.5 / 255


def _tints_off_lines(explained: torch.Tensor, tinted: torch.Tensor, thin: torch.Tensor, ridges: torch.Tensor | None) -> torch.Tensor:
    """``explained``, and the ``tinted`` pixels over 2 px from a line (``thin``, or the ``ridges``)."""
    wire = thin if ridges is None else thin | ridges
    return explained | tinted & ~dilate(wire.float(), 2).bool()


def _thin_lines(enc, backdrop, sigma, params: CutoutParams) -> torch.Tensor:
    """Wire, prongs and hooks too faint for the per-pixel threshold: pixels off the backdrop that
    also stand out from their 1.5 px surroundings the same way (darker and darker, or brighter and
    brighter). A smooth shadow does not stand out from its surroundings. In bands of rows, a channel
    at a time (``BAND_ROWS``)."""
    lines = _bool_mask(enc)
    for own, read, keep in row_bands(enc.shape[-2], BAND_ROWS, BAND_HALO):
        band = None
        for c in range(enc.shape[1]):
            e, s = enc[:, c:c + 1, read], sigma[:, c:c + 1]
            off = (e - backdrop[:, c:c + 1, read]) / s
            ridge = (e - gaussian_blur(e, 1.5)) / s
            same_way = (off * ridge > 0) & (off.abs() > params.bg_sigmas) & (ridge.abs() > params.line_sigmas)
            band = same_way if band is None else band.logical_or_(same_way)
        lines[..., own, :] = band[..., keep, :]
    return lines


def ridge_lines(enc: torch.Tensor, backdrop: torch.Tensor, quiet: torch.Tensor, params: CutoutParams) -> np.ndarray:
    """(H, W) bool: wire, chain links and prongs too faint for the per-pixel tests in a noisy frame.

    A line is a ridge (or valley) of the departure from the backdrop: the Hessian's strongest
    eigenvalue on a ``ridge_scale`` px Gaussian, the same way as the departure and larger than the
    gradient there (so a step of colour, a fall-off or a shadow's edge is no line), in units of its
    own noise over the ``quiet`` backdrop (bool, (1, 1, H, W)). Found where it passes
    ``ridge_sigmas`` and followed while it passes ``ridge_grow_sigmas`` (hysteresis: a link is found
    from its clearest part); lines under ``ridge_min_area`` of the frame are noise. The second
    derivative ignores the backdrop model's smooth errors, and the Gaussian takes most of the noise:
    at ISO 3200 a rose-gold chain on grey is 8 sigmas of no single pixel. A frame larger than
    ``ridge_size`` is read at that size (area filter) and the lines grown back.
    """
    h, w = enc.shape[-2:]
    size = shrunk_size((h, w), params.ridge_size, smallest=8)
    plain = resize(quiet.to(enc.dtype), size)[0, 0].cpu().numpy() > 0.99
    step = max(1, math.ceil(math.sqrt(plain.size / SAMPLE_ABOVE)))
    plain = plain[::step, ::step]
    z = None
    for c in range(enc.shape[1]):
        g = cv2.GaussianBlur(resize(enc[:, c:c + 1] - backdrop[:, c:c + 1], size)[0, 0].float().cpu().numpy(), (0, 0),
                             params.ridge_scale)
        dxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3, scale=0.25)
        dyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3, scale=0.25)
        root = np.hypot(dxx - dyy, 2 * cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3, scale=0.25))
        half = 0.5 * (dxx + dyy)
        strongest = np.where(half >= 0, half + 0.5 * root, half - 0.5 * root)
        grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, scale=0.125), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, scale=0.125))
        noise = 1.4826 * np.median(np.abs(strongest[::step, ::step][plain])) if plain.sum() > 64 else np.inf
        zc = np.abs(strongest) / max(float(noise), 1e-6)
        zc[(strongest * g >= 0) | (np.abs(strongest) * params.ridge_scale <= 2 * grad)] = 0
        z = zc if z is None else np.maximum(z, zc)
    n, labels, stats, _ = regions.parts((z > params.ridge_grow_sigmas).astype(np.uint8))
    keep = np.bincount(labels[z > params.ridge_sigmas], minlength=n) > 0
    keep &= stats[:, cv2.CC_STAT_AREA] >= params.ridge_min_area * z.size
    keep[0] = False
    lines = keep[labels]
    if size != (h, w):     # grown back on the ridge's strength (16 codes a sigma), so a line keeps its width, not blocks
        code = np.where(lines, np.minimum(z * 16, 255), 0).astype(np.uint8)
        lines = cv2.resize(code, (w, h), interpolation=cv2.INTER_LINEAR) > 16 * params.ridge_grow_sigmas
    return lines


def _plain_backdrop(enc, backdrop, sigma, params: CutoutParams) -> np.ndarray:
    """Pixels that match the backdrop model on a 1.5 px average (no shadow, no metal); in bands of rows,
    a channel at a time (``BAND_ROWS``)."""
    plain = np.empty(enc.shape[-2:], bool)
    for own, read, keep in row_bands(enc.shape[-2], BAND_ROWS, BAND_HALO):
        band = None
        for c in range(enc.shape[1]):
            z = (gaussian_blur(enc[:, c:c + 1, read] - backdrop[:, c:c + 1, read], 1.5)
                 / (SMOOTH_NOISE * sigma[:, c:c + 1])).abs_()
            band = z < params.fg_sigmas if band is None else band.logical_and_(z < params.fg_sigmas)
        plain[own] = band[0, 0, keep].cpu().numpy()
    return plain


def edge_strength(planes: Iterable[np.ndarray], quiet: np.ndarray | None, noise: np.ndarray | None = None) -> np.ndarray:
    """Gradient of an image (its (H, W) planes: a (C, H, W) array, or planes made one at a time; sRGB,
    or its departure from the backdrop) on a 1 px Gaussian,
    in units of the noise over the ``quiet`` pixels (plain backdrop: their 1 px high-pass; above
    ``SAMPLE_ABOVE`` pixels an even grid of them; or the per-channel ``noise`` given, measured so
    elsewhere), largest channel, taken within 1 px (H, W).

    A piece ends in a step of colour; a sweep's fall-off, a shadow's fade and a face mirroring the
    sweep do not. The cut-out drops parts with no edge around them (on the departure from the
    backdrop, so a desk's or a paper's own texture is no edge); QA asks the same of the final
    outline, on the source. Plane by plane, the gradients in bands of rows (``BAND_ROWS``): a 24 MP
    frame is never transposed or copied whole, and its gradients are never whole planes.
    """
    strongest = None
    for c, plane in enumerate(planes):
        plane = np.ascontiguousarray(plane, np.float32)
        step = math.ceil(math.sqrt(plane.size / SAMPLE_ABOVE)) if plane.size > SAMPLE_ABOVE else 1
        smooth = cv2.GaussianBlur(plane, (0, 0), 1.0)
        if noise is not None:
            sigma = np.float32(noise[c])
        elif quiet[::step, ::step].sum() > 64:
            high = (plane[::step, ::step] - smooth[::step, ::step])[quiet[::step, ::step]]
            sigma = np.maximum(np.float32(1.4826) * np.median(np.abs(high)), np.float32(1e-3))
        else:
            sigma = np.float32(0.01)
        del plane
        if strongest is None:
            strongest = np.empty_like(smooth)
        for own, read, keep in row_bands(smooth.shape[0], BAND_ROWS, BAND_HALO):
            gx = cv2.Sobel(smooth[read], cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
            gy = cv2.Sobel(smooth[read], cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
            g = np.hypot(gx, gy, out=gx)[keep]
            g /= sigma
            if c == 0:
                strongest[own] = g
            else:
                np.maximum(strongest[own], g, out=strongest[own])
        del smooth
    return cv2.dilate(strongest, np.ones((3, 3), np.uint8))


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the mask's own pixels that touch the outside (8-neighbourhood)."""
    return (mask > 0) & (cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0)


def _fades(labels: np.ndarray, n: int, rim: np.ndarray, edged: np.ndarray, params: CutoutParams) -> np.ndarray:
    """Per label: its ``rim`` pixels (where it meets the backdrop, at least 8) mostly lie where the
    photo has no edge (``edged``: bool, on a step of colour)."""
    support = component_mean(labels[rim], n, edged[rim])
    return (support < params.min_edge_support) & (np.bincount(labels[rim], minlength=n) >= 8)


def _drop_edgeless(core: np.ndarray, edged: np.ndarray, params: CutoutParams) -> np.ndarray:
    """Drop components of ``core`` with no edge around them and none inside: a sweep's fall-off or a
    patch of uneven light crossing the threshold, a detached shadow's fade. A component with edges
    inside holds a piece (merged with a glow or a shadow around it): it stays."""
    n, labels, _, _ = regions.parts(core)
    if n <= 1:
        return core
    rim = outline(core)
    inside = (core > 0) & ~rim
    structure = component_mean(labels[inside], n, edged[inside])
    drop = _fades(labels, n, rim, edged, params) & (structure < 0.01)
    drop[0] = False
    return core & ~drop[labels].astype(np.uint8)


# the long edge PlateNet reads a frame at, and SegNet a frame or a piece's box
PLATE_SIZE = SEGNET_SIZE = 384
PIERCED_PX = 9      # the smallest hole HoleNet is asked about: 3 x 3 px is seen at 1:1 (bench/trust.py's criterion)


def _plate_probability(image: torch.Tensor, plate: torch.Tensor, params: CutoutParams) -> torch.Tensor:
    from models.platenet import load_platenet, plate_probability

    return plate_probability(image, plate, load_platenet(params.plate_network_weights, image.device), PLATE_SIZE)


def _piece_probability(enc: torch.Tensor, params: CutoutParams, coarse: bool = False,
                       size: int = SEGNET_SIZE) -> torch.Tensor:
    from models.segnet import load_segnet, piece_probability

    return piece_probability(enc, load_segnet(params.network_weights, enc.device), size, coarse=coarse)


def _with_fine_wire(prob: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """``prob`` raised to ``fine`` (SegNet's probability with the frame read larger) everywhere but in the
    openings ``prob`` sees (the backdrop its piece encloses). Read past its training scale SegNet finds
    wire it loses at 384 px, but it also closes ear-wire hooks, eyelets and link gaps. The openings are
    found on the piece's box grown by a pixel (what they are is the same there as on the frame)."""
    raised = torch.maximum(prob, fine)
    box = grown_box(prob, 1)
    if box is None:
        return raised
    near = prob[0, 0, box[0], box[1]]
    _, openings, _ = regions.holes((near > 0.5).to(torch.uint8).cpu().numpy())
    seen = torch.from_numpy(openings > 0).to(prob.device)
    raised[0, 0, box[0], box[1]] = torch.where(seen, near, raised[0, 0, box[0], box[1]])
    return raised


# pixels per slice where a whole-plane temporary would be large
CHUNK = 1 << 20


def component_mean(labels: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each of the ``n`` labelled components.

    A million pixels at a time: weights are read as float64 and labels as int64, and a 24 MP plane's
    copy would be 192 MB (a bool's sums and the counts are integers, exact either way)."""
    labels, values = labels.ravel(), values.ravel()
    sums, counts = np.zeros(n), np.zeros(n, np.int64)
    for i in range(0, labels.size, CHUNK):
        part, weights = labels[i:i + CHUNK], values[i:i + CHUNK]
        sums += (np.bincount(part[weights], minlength=n) if weights.dtype == bool
                 else np.bincount(part, weights=weights, minlength=n))
        counts += np.bincount(part, minlength=n)
    return sums / np.maximum(counts, 1)



def _grey(shade: torch.Tensor, explained: torch.Tensor, params: CutoutParams) -> np.ndarray:
    """(H, W) bool: a shadow's pixels could be these, a grey darkening of the backdrop (``explained``)
    no deeper than ``deepest_shadow``."""
    return (explained & (shade < 1) & (shade > params.deepest_shadow))[0, 0].cpu().numpy()


def _drop_shadows(flat: np.ndarray, shade, grey: np.ndarray, core: np.ndarray, prob: np.ndarray | None,
                  edged: np.ndarray, params: CutoutParams, trusted: bool = False) -> np.ndarray:
    """Remove parts of ``core`` that are a grey darkening of the backdrop (``grey``, from ``_grey``) and
    that the segmentation network, which sees the whole scene, calls background, that fade into the
    backdrop with no edge where they meet it, or that darken it evenly beside the piece (a shadow).
    The parts are of ``flat`` pixels (``_flat``): split at edges, so a shadow touching grey metal is
    judged apart from the metal. ``trusted``: ``prob`` is PlateNet's, which saw the plate: no part it
    calls piece is a shadow."""
    candidates = (core > 0) & grey & flat
    if trusted:     # and at the trusted network's edge
        piece, ring = (prob > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)
        candidates &= (cv2.dilate(piece, ring) == 0) | (cv2.erode(piece, ring) > 0)
    n, labels, stats, _ = regions.parts(candidates.astype(np.uint8))
    if n <= 1:
        return core
    rim = outline(core) & candidates     # where a candidate meets the backdrop
    umbrae = _umbrae(labels, stats, shade, core, params)
    shadow = _fades(labels, n, rim, edged, params) | umbrae
    if prob is not None:
        believed = component_mean(labels, n, prob)
        vetoed = believed < params.shadow_p
        if trusted:     # what it calls piece is no shadow, however evenly grey or edgeless
            shadow &= believed < 0.5
        else:   # SegNet judges no part too thin for it to see; PlateNet, which reads the plate, keeps its say
            width = params.shadow_net_width * max(core.shape) / SEGNET_SIZE
            vetoed &= ~_unseen_lines(core, labels, stats, vetoed & ~shadow, prob, width)
        shadow |= vetoed
    shadow[0] = False
    gone = shadow[labels]
    if umbrae.any():
        # a hard shadow's own edge, between it and the backdrop (not flat, so no candidate): left
        # alone, it stays as a line around a region the piece then encloses
        near = np.ones((5, 5), np.uint8)
        gone |= ((cv2.dilate(umbrae[labels].astype(np.uint8), near) > 0) & (cv2.dilate(1 - core, near) > 0)
                 & (core > 0) & grey & ~flat)
    return core & ~gone.astype(np.uint8)


def _drop_clean_tints(flat: np.ndarray, shade, grey: np.ndarray, core: np.ndarray, prob: np.ndarray,
                      edged: np.ndarray, params: CutoutParams) -> np.ndarray:
    """On a frame whose noise is under ``CLEAN_FILE_NOISE`` (a blown or retouched backdrop has none to
    measure), ``_drop_shadows`` again with the tint tolerance where only an 8-bit file's ripples had made
    lines that kept it off (``grey``): a gold piece's warm contact shadow on blown white, left as a slab.
    A polished white-metal face is as grey within the tolerance, and the network is unsure of such faces
    (0.15-0.23 on a real ring and a validation light box), so what it drops here it must be sure is
    background (``unseen_p``, the bar for parts it sees nothing of)."""
    return _drop_shadows(flat, shade, grey, core, prob, edged, params.model_copy(update={"shadow_p": params.unseen_p}))


def _unseen_lines(core: np.ndarray, labels: np.ndarray, stats: np.ndarray, which: np.ndarray, prob: np.ndarray,
                  width: float) -> np.ndarray:
    """Which of the components ``which`` (``labels``/``stats`` of a mask within ``core``) are part of a
    chain that a network reading the frame at ``width`` / 2 px a pixel cannot see: narrower than
    ``width`` px throughout, in a part of ``core`` at least 4 ``width`` long that closes two loops or
    more (links), and either that part has no pixel within ``width`` of one that ``prob`` calls piece,
    or the component itself has none and closes a loop of its own (a link). There it saw only the
    backdrop around; a contact shadow's sliver or a JPEG speck lies against a piece it saw or closes
    no loop, and a hair or a lint on the sweep closes none. The second way is for a chain hung from a
    pendant the network sees: judged by their whole part, its links were seen as soon as the pendant
    was, and dropped as a shadow. Read on the box of ``which`` grown by 4 ``width``: a part longer
    than the box is at least as long as its share of it."""
    which = which & (np.arange(len(stats)) > 0)      # label 0: what lies outside every component
    if width <= 0 or not which.any():
        return np.zeros(len(stats), bool)
    ids = np.flatnonzero(which)
    x, y = stats[ids, cv2.CC_STAT_LEFT], stats[ids, cv2.CC_STAT_TOP]
    box = grow((slice(int(y.min()), int((y + stats[ids, cv2.CC_STAT_HEIGHT]).max())),
                slice(int(x.min()), int((x + stats[ids, cv2.CC_STAT_WIDTH]).max()))), math.ceil(4 * width), core.shape)
    lab = labels[box]
    mine = which[lab]
    wide = cv2.distanceTransform(mine.astype(np.uint8), cv2.DIST_L2, 3) >= width / 2
    near = cv2.distanceTransform((prob[box] <= 0.5).astype(np.uint8), cv2.DIST_L2, 3) <= width
    n_parts, parts, part_stats, _ = regions.parts(core[box])
    long = np.maximum(part_stats[:, cv2.CC_STAT_WIDTH], part_stats[:, cv2.CC_STAT_HEIGHT]) >= 4 * width
    chained = long & (_loops(parts, n_parts) >= 2)
    part_of = np.zeros(len(stats), np.int64)
    part_of[lab[mine]] = parts[mine]      # each component lies in one part of ``core``
    unseen_part = np.bincount(parts[near], minlength=n_parts) == 0
    link = _loops(np.where(mine, lab, 0), len(stats)) >= 1      # a loop the component closes by itself
    unseen = unseen_part[part_of] | (link & (np.bincount(lab[mine & near], minlength=len(stats)) == 0))
    return which & (np.bincount(lab[mine & wide], minlength=len(stats)) == 0) & chained[part_of] & unseen


def _loops(parts: np.ndarray, n: int) -> np.ndarray:
    """Per label of ``parts`` (8-connected parts of a mask, 0 outside): the holes it encloses."""
    n_holes, holes, stats = regions.holes((parts != 0).astype(np.uint8))
    loops = np.zeros(n, np.int64)
    for k in range(1, n_holes):
        x, y = stats[k, cv2.CC_STAT_LEFT], stats[k, cv2.CC_STAT_TOP]
        row = y + int(np.argmax(holes[y:y + stats[k, cv2.CC_STAT_HEIGHT], x] == k))   # a pixel on its left edge
        loops[parts[row, x - 1]] += 1        # and the part just left of it, which encloses it
    return loops


def _part_box(stats: np.ndarray, k: int) -> tuple[slice, slice]:
    """The bounding box (rows, columns) of component ``k`` of ``stats`` (``regions.parts``'s)."""
    x, y, w, h = stats[k, :4]
    return slice(y, y + h), slice(x, x + w)


def _drop_unseen_faint(core: np.ndarray, prob: np.ndarray, sure: np.ndarray, params: CutoutParams) -> np.ndarray:
    """Remove the parts of ``core`` beside the piece that the network sees nothing of (mean
    probability under ``unseen_p``) and that rest on faint evidence alone (under 1% of their pixels
    ``sure``ly depart from the backdrop): a lamp's hot spot the smooth fit misses, or JPEG blocks on
    it, read as faint flat metal. A separate piece the network misses still departs somewhere (a
    chain's wire does, at 1.1-1.3 times the sure threshold, where those blobs stay under half of it
    on the training worlds), and a line too thin for the network is never judged by it
    (``_unseen_lines``). The piece is the largest part, however faint and unseen, unless a part with
    evidence is at least half its size: a hot spot larger than the chain beside it is no piece.

    Within the parts kept (the piece's too), a region more than 3 px from every sure pixel that the
    network calls background and that is too wide to be beyond its sight (its inscribed radius at least
    ``shadow_net_width`` of its pixels: four across) goes the same way: light bounced into a ring's
    opening, brighter than the fit there, read as faint flat metal and joined to the ring. A chain's
    faint wire is narrower than that."""
    width = params.shadow_net_width * max(core.shape) / SEGNET_SIZE
    n, labels, stats, _ = regions.parts(core)
    if n <= 2:
        return _drop_unseen_wide(core, labels, prob, sure, width, params)
    area = stats[:, cv2.CC_STAT_AREA]
    judged = area >= params.min_area * core.size    # smaller ones: the size filter's, or lines'
    judged[0] = False
    unseen = np.zeros(n, bool)
    for k in np.flatnonzero(judged):      # each on its own box: a few parts, never the frame's planes
        box = _part_box(stats, k)
        part = labels[box] == k
        unseen[k] = float(prob[box][part].mean()) < params.unseen_p and float(sure[box][part].mean()) < 0.01
    largest = int(np.argmax(area[1:])) + 1
    if not (area[judged & ~unseen] * 2 >= area[largest]).any():
        unseen[largest] = False
    kept = core
    for k in np.flatnonzero(unseen):
        if _unseen_lines(core, labels, stats, np.arange(n) == k, prob, width)[k]:   # reads the box of what it is given
            continue
        if kept is core:
            kept = core.copy()
        box = _part_box(stats, k)
        kept[box][labels[box] == k] = 0
    return _drop_unseen_wide(kept, labels, prob, sure, width, params)


def _drop_unseen_wide(core: np.ndarray, parts: np.ndarray, prob: np.ndarray, sure: np.ndarray, width: float,
                      params: CutoutParams) -> np.ndarray:
    """``_drop_unseen_faint``'s second look: regions of ``core`` over 3 px from every ``sure`` pixel, at
    least ``min_area`` of the frame, with an inscribed radius of ``width`` px or more, that the network
    gives under ``unseen_p``: removed, where the part of ``core`` they lie in has sure pixels elsewhere
    (a part with none is judged whole by the first look, which keeps the piece). ``parts``: the labels
    of the parts the first look judged (``core`` is what it kept of them, whole parts)."""
    far = (core > 0) & (cv2.dilate(sure.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0)
    n, labels, stats, _ = regions.parts(far.astype(np.uint8))
    if n <= 1:
        return core
    evidenced = np.bincount(parts[sure & (core > 0)], minlength=int(parts.max()) + 1) > 0
    kept = core
    judged = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= params.min_area * core.size)
    for k in judged[judged > 0]:      # (label 0: what lies outside every region)
        box = _part_box(stats, k)
        part = labels[box] == k
        if not evidenced[parts[box][part][0]] or float(prob[box][part].mean()) >= params.unseen_p:
            continue
        if cv2.distanceTransform(np.pad(part, 1).astype(np.uint8), cv2.DIST_L2, 3).max() < width:
            continue
        if kept is core:
            kept = core.copy()
        kept[box][part] = 0
    return kept


def _flat(enc: torch.Tensor, sigma: torch.Tensor, params: CutoutParams) -> np.ndarray:
    """(H, W) bool: no channel steps by ``fg_sigmas`` noise sigmas to the next pixel down or right on a
    1 px Gaussian (the frame's last row and column step to nothing). In bands of rows (``BAND_ROWS``)."""
    flat = np.empty(enc.shape[-2:], bool)
    for own, read, keep in row_bands(enc.shape[-2], BAND_ROWS, BAND_HALO):
        steep = None
        for c in range(enc.shape[1]):
            smooth = gaussian_blur(enc[:, c:c + 1, read], 1.0)
            gy, gx = torch.zeros_like(smooth), torch.zeros_like(smooth)   # the last row / column stays 0
            torch.sub(smooth[..., 1:, :], smooth[..., :-1, :], out=gy[..., :-1, :])
            torch.sub(smooth[..., :, 1:], smooth[..., :, :-1], out=gx[..., :, :-1])
            g = torch.maximum(gx.abs_(), gy.abs_(), out=gx).div_(sigma[:, c:c + 1])
            steep = g if steep is None else torch.maximum(steep, g, out=steep)
        flat[own] = (steep < params.fg_sigmas)[0, 0, keep].cpu().numpy()
    return flat


def _umbrae(labels: np.ndarray, stats: np.ndarray, shade: torch.Tensor, core: np.ndarray,
            params: CutoutParams) -> np.ndarray:
    """Per label (``stats`` from ``cv2.connectedComponentsWithStats``): a large region that darkens
    the backdrop evenly, a hard light's umbra, beside the piece that casts it (the part of ``core``
    it belongs to is at least half as large again). The network takes a sharp shadow for a grey
    copy of the piece and its edge is as crisp as metal's; but metal that passes for a grey
    darkening still shades with its curvature, highlights and reflections, and an even grey part
    with nothing beside it is a piece: no shadow without a caster."""
    umbra = np.zeros(len(stats), bool)
    areas = stats[:, cv2.CC_STAT_AREA]
    for k in np.flatnonzero(areas >= params.umbra_area * labels.size):
        if k == 0:
            continue
        box = grow(_part_box(stats, k), 4, labels.shape)
        inside = labels[box] == k
        first = np.unravel_index(np.argmax(inside), inside.shape)
        if _part_area(core, (box[0].start + first[0], box[1].start + first[1])) < 1.5 * areas[k]:
            continue
        # read 2 px inside its outline, past the penumbra and the blur's reach into the backdrop or the
        # metal beside it: across a thin umbra (a band's) those edges are most of its pixels. Where that
        # keeps under half of it, all of it: what is left is a line, even along itself whatever it is
        # (a band's bevel mirroring the sweep, 5 px wide, as dark as a shadow)
        within = cv2.erode(inside.astype(np.uint8), regions.disk(2)) > 0
        smooth = gaussian_blur(shade[..., box[0], box[1]], 1.5)[0, 0].cpu().numpy()[
            within if within.sum() * 2 >= inside.sum() else inside]
        smooth = smooth[:: max(1, smooth.size // 100_000)]      # an even sample is enough for a spread
        p10, p50, p90 = np.percentile(smooth, [10, 50, 90])
        umbra[k] = (p90 - p10) < params.umbra_spread * p50
    return umbra


def _part_area(mask: np.ndarray, at: tuple[int, int]) -> int:
    """Pixels of the 8-connected part of ``mask`` (uint8, 0/1) holding pixel ``at`` (row, column), which
    is set: a flood fill of that part alone, not a label for every pixel of the frame (96 MB at 24 MP)."""
    seen = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    area, *_ = cv2.floodFill(mask, seen, (int(at[1]), int(at[0])), 1, 0, 0, 8 | cv2.FLOODFILL_MASK_ONLY | (1 << 8))
    return int(area)


def _shadow_lines(lines: np.ndarray, core: np.ndarray, grey: np.ndarray, lit: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """(H, W) bool: the ``lines`` (``ridge_lines``) that are a hard shadow's copy of wire (a chain's,
    cast beside it on the sweep), not wire. Judged a line at a time where it adds to the ``core`` (2 px
    beyond it). A shadow's line is a grey darkening of the backdrop all along (``grey`` on 90% of its
    pixels), nowhere brighter than it (``lit`` on under 5%: metal has a highlight somewhere), the
    network calls it background (mean ``prob`` under 0.5), and it is the piece moved by the light's
    offset: half its pixels or more lie where the piece, moved by the one offset that best lays the
    core onto such lines (``_cast_offset``), falls. A grey chain in dim light passes the first three
    too; it is no copy of the piece at that offset."""
    beyond = lines & (cv2.dilate(core, np.ones((5, 5), np.uint8)) == 0)
    n, labels, _, _ = regions.parts(beyond.astype(np.uint8))
    if n <= 1:
        return np.zeros_like(lines)
    dark = (component_mean(labels, n, grey) >= 0.9) & (component_mean(labels, n, lit) < 0.05) \
        & (component_mean(labels, n, prob) < 0.5)
    dark[0] = False
    offset = _cast_offset(core, dark[labels]) if dark.any() else None
    if offset is None:
        return np.zeros_like(lines)
    dy, dx = offset
    h, w = core.shape
    piece = cv2.dilate(core | lines, np.ones((3, 3), np.uint8))
    cast = np.zeros_like(piece)     # where the piece falls, moved by the offset
    cast[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = piece[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    # and as far off the piece as an offset that long casts it (a quarter of it): wire beyond the core
    # lies beside it, whichever offset lays the core on it
    far = component_mean(labels, n, cv2.distanceTransform((core == 0).astype(np.uint8), cv2.DIST_L2, 3))
    shadow = dark & (component_mean(labels, n, cast.astype(bool)) >= 0.5) & (far >= math.hypot(dy, dx) / 4)
    return shadow[labels]


def _cast_offset(core: np.ndarray, cast: np.ndarray, size: int = 512) -> tuple[int, int] | None:
    """(dy, dx) in px: the offset at which ``core`` (uint8), moved, lies on most of ``cast`` (bool), read
    at ``size`` px by a cross-correlation; None when none lays it on a third of ``cast``, or when moved
    the other way it lies on half as much or more (a chain's own wire beyond its core matches the core
    moved along the chain either way; a shadow falls on one side only). Offsets under a 100th of the
    frame's long edge are not looked at: there the core's own edge matches whatever lies beside it."""
    h, w = core.shape
    small = shrunk_size((h, w), size)
    scale = max(h, w) / max(small)
    a, b = (cv2.resize(m.astype(np.float32), small[::-1], interpolation=cv2.INTER_AREA) for m in (core, cast))
    a = cv2.dilate((a > 0).astype(np.float32), np.ones((3, 3), np.uint8))
    shape = (2 * small[0], 2 * small[1])        # zero-padded: no offset wraps around
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(a, shape)) * np.fft.rfft2(b, shape), shape)
    ys = np.fft.fftfreq(shape[0], 1 / shape[0])[:, None]
    xs = np.fft.fftfreq(shape[1], 1 / shape[1])[None, :]
    corr[np.hypot(ys, xs) < max(small) / 100] = 0
    k = np.unravel_index(int(np.argmax(corr)), corr.shape)
    back = corr[-k[0] % shape[0], -k[1] % shape[1]]
    if corr[k] < b.sum() / 3 or back >= corr[k] / 2:
        return None
    return round(float(ys[k[0], 0]) * scale), round(float(xs[0, k[1]]) * scale)


def _fill_enclosed_metal(mask: np.ndarray, plain: np.ndarray, prob: np.ndarray | None, plain_share: float,
                         min_area: int) -> np.ndarray:
    """Fill regions the piece encloses unless enough of them shows the plain backdrop.

    A ring's interior shows the sweep; a flat patch of grey metal inside the
    outline (a polished wall reflecting the studio) does not, even when its
    colour is close to the sweep's. Only regions of at least ``min_area`` px:
    the small gaps inside chain links and eyelets lie in the piece's shadow,
    so they never look plain; metal patches that matter are larger. With the
    network's ``prob``, a region it calls background (a shaded ring interior)
    stays a hole.
    """
    n, labels, stats = regions.holes(mask)
    if n <= 1:
        return mask
    fill = (component_mean(labels, n, plain) < plain_share) & (stats[:, cv2.CC_STAT_AREA] >= min_area)
    if prob is not None:
        fill &= component_mean(labels, n, prob) >= 0.3
    fill[0] = False
    return mask | fill[labels].astype(np.uint8)


def _fill_pinholes(mask: np.ndarray, enc: np.ndarray, backdrop: np.ndarray, max_area: int, sure: np.ndarray) -> np.ndarray:
    """Fill small holes that are metal: in a highlight (at most half as far in colour from the metal
    ringing them as from the backdrop), or deep inside solid metal (the metal around is over 1.5x as
    thick as the hole is wide, and its ring is ``sure`` piece, far off the backdrop, so a mask
    already grown over a chain's gaps does not close the last ones).

    A highlight on white metal can come within the noise of a white sweep and drop out as
    a pinhole. A real small hole (a link's gap, an eyelet) shows the backdrop, unlike the wire
    around it, lies in the piece's shade, and is ringed by wire no thicker than itself.
    ``enc``/``backdrop``: (H, W, 3) sRGB image and backdrop model.
    """
    n, labels, stats = regions.holes(mask)
    kernel = np.ones((5, 5), np.uint8)
    out = mask.copy()
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] > max_area:
            continue
        at, hole, width = _hole_window(labels, stats, k)
        ring = (cv2.dilate(hole.astype(np.uint8), kernel) > 0) & ~hole & (mask[at] > 0)
        if ring.sum() < 4:
            continue
        colour, around = enc[at][hole].mean(0), enc[at][ring].mean(0)
        behind = backdrop[at][hole].mean(0)
        # a dropout in a highlight matches the metal around it far better than the backdrop;
        # a link's gap (the sweep in the chain's shade) is no closer to the wire than to the sweep
        highlight = np.abs(colour - around).max() < 0.5 * np.abs(colour - behind).max()
        reach = 2 * int(width) + 7     # the metal beyond the hole's own mixed rim, as far again as it is wide
        beyond = (cv2.dilate(hole.astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0) & ~ring & ~hole
        solid = ((mask[at] > 0) & sure[at])[beyond].mean() >= 0.9
        if highlight or (solid and _hole_depth(mask[at], hole) >= 1.5 * width + 2):
            out[at][hole] = 1
    return out


# A chain's link gap as the cut-out's core holds it, closed over by the faint test's average and the close:
# the pixels that still show the backdrop, in the wire's soft contact shadow (pockets' mean shade 0.81-0.89 on
# the training world's chains; what such pockets find in pave and lattices, metal and dark facets, is 0.3-0.5,
# and a white pave stone on blown white 0.94-0.97: as likely the backdrop, so it is left), 0.5 to 12 of
# SegNet's pixels in area (at 1200 px from 5 px: smaller specks are noise in grey metal), where the piece, its
# holes filled, is no thicker than 3 of its pixels around them (links 1.8-2.9; pave bands and lattices 3.3 up)
GAP_SHADE = 0.6
GAP_PALEST = 0.93
GAP_AREA = (0.5, 12.0)
GAP_THICK = 3.0


def _link_gaps(core: np.ndarray, shade: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """(H, W) bool: the link gaps of a chain that the core has closed over, to open again. Pockets of
    ``core`` whose every pixel is a grey darkening of the backdrop (``grey``, from ``_shadow_scores``)
    in a light shade (``shade`` over ``GAP_SHADE``; the pocket's mean at most ``GAP_PALEST``),
    ``GAP_AREA`` in size, ringed wholly by core whose colour no grey darkening explains (``grey`` on
    under a fifth of the ring: coloured wire; a white wire's dark edges around its pale spine are grey,
    and a silver chain on white stays as it is), as shallow in the core as ``_fill_pinholes`` calls a
    hole of the design (not deep in solid metal), where the piece, its holes filled, is no thicker than
    ``GAP_THICK`` of SegNet's pixels around them. The matte then takes them as backdrop (``cut_out``'s
    ``sure_bg``)."""
    n, labels, stats, _ = regions.parts(((core > 0) & grey & (shade > GAP_SHADE)).astype(np.uint8))
    gaps = np.zeros(core.shape, bool)
    net_px = max(core.shape) / SEGNET_SIZE
    area = stats[:, cv2.CC_STAT_AREA] / net_px ** 2
    sized = (area >= GAP_AREA[0]) & (area <= GAP_AREA[1])
    sized[0] = False        # (label 0: what lies outside every pocket)
    if not sized.any():
        return gaps
    # how thick the piece is, read with its holes filled: pave's stones cut out as holes leave a web of metal
    # as thin as a chain's wire
    thickness = cv2.distanceTransform(((core > 0) | (regions.holes(core)[1] > 0)).astype(np.uint8), cv2.DIST_L2, 3)
    for k in np.flatnonzero(sized):
        width = 2 * math.sqrt(stats[k, cv2.CC_STAT_AREA] / math.pi)
        box = grow(_part_box(stats, k), int(2 * width) + 8, core.shape)
        pocket = labels[box] == k
        ring = (cv2.dilate(pocket.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~pocket
        around = core[box] & ~pocket
        if not around[ring].all() or grey[box][ring].mean() > 0.2 or shade[box][pocket].mean() > GAP_PALEST:
            continue
        if _hole_depth(around, pocket) >= 1.5 * width + 2:
            continue
        if thickness[box].max() > GAP_THICK * net_px:
            continue
        gaps[box] |= pocket
    return gaps


def _hole_window(labels: np.ndarray, stats: np.ndarray, k: int) -> tuple[tuple[slice, slice], np.ndarray, float]:
    """Hole ``k`` of ``labels`` (``stats`` from ``tasks.regions.holes``) on a window twice its width around it:
    the window, the hole's pixels there, and its width (the diameter of a disc of its area)."""
    x, y, w, h, area = stats[k]
    width = 2 * np.sqrt(area / np.pi)
    m = int(2 * width) + 4
    at = (slice(max(0, y - m), y + h + m), slice(max(0, x - m), x + w + m))
    return at, labels[at] == k, float(width)


def _hole_depth(mask: np.ndarray, hole: np.ndarray) -> float:
    """How deep ``hole`` lies in the piece ``mask`` (both on a window): the largest distance from a pixel of
    the hole to one that is neither piece nor hole. A hole of the design is ringed by wire or a band no
    thicker than itself; a facet or a highlight that dropped out lies deep in solid piece."""
    return float(cv2.distanceTransform((mask | hole).astype(np.uint8), cv2.DIST_L2, 3)[hole].max())


def _fill_facets(core: np.ndarray, enc: torch.Tensor, backdrop: torch.Tensor, params: CutoutParams) -> np.ndarray:
    """Fill holes of ``core`` that are a stone's facet or a polished face, not an opening: SegNet,
    read on the piece's box (grown by a 40th of the frame), calls them piece (mean probability
    ``facet_p``), they are deep in solid piece (ringed by ``facet_ring`` of their radii), their mean
    colour departs from the backdrop model's (``backdrop``, sRGB) by ``min_contrast`` and they are not
    darker than it (``facet_shade``: an opening in the piece's own shadow is, a link's gap or a
    lattice's). Only holes of at most ``facet_max_share`` of the piece and at least ``facet_net_px``
    of the network's pixels.

    Read on the whole frame (384 px) the network calls nearly every small hole piece; on the box, 1-3x
    finer on a studio shot, it tells most openings from facets. A hole that looks like the backdrop
    (an opening of a retouched web photo: white within JPEG's ripple, ringed by thick metal, that the
    network calls piece) stays: nothing tells the two apart there, and QA holds a hole for a person,
    where a filled opening would change the design."""
    h, w = core.shape
    box = grown_box(torch.from_numpy(core)[None, None], max(8, round(max(h, w) / 40)))
    if box is None:
        return core
    out = core.copy()
    part = out[box]                 # a view: what the first look fills, the second sees
    shrink = max(part.shape) / SEGNET_SIZE        # the network's pixel, in px of the frame
    enc_box, backdrop_box = enc[..., box[0], box[1]], backdrop[..., box[0], box[1]]
    coarse = None
    # the core's holes, then the holes the matte will make: it keeps alpha 1 only a pixel inside the core
    # (``_matte``'s ``inner``), so a facet the core holds in a web of scattered pixels is one hole there,
    # not many cells under the size floor
    for as_matted in (False, True):
        n, labels, stats = regions.holes(cv2.erode(part, np.ones((3, 3), np.uint8)) if as_matted else part)
        area = stats[:, cv2.CC_STAT_AREA]
        candidates = (area <= params.facet_max_share * part.sum()) & (area >= params.facet_net_px * shrink ** 2)
        candidates[0] = False     # label 0: not a hole
        if not candidates.any():
            continue
        if coarse is None:
            coarse = _piece_probability(enc_box, params, coarse=True)
        for k in np.flatnonzero(candidates):
            x, y, w_k, h_k, _ = stats[k]
            radius = math.sqrt(area[k] / math.pi)
            # each hole on its own window, grown as far as its ring must reach
            reach = math.ceil((1 + params.facet_ring) * radius) + 2
            rows = slice(max(y - reach, 0), min(y + h_k + reach, part.shape[0]))
            cols = slice(max(x - reach, 0), min(x + w_k + reach, part.shape[1]))
            hole = labels[rows, cols] == k
            if _is_facet(hole, part[rows, cols], enc_box[..., rows, cols], backdrop_box[..., rows, cols],
                         resize_at(coarse, part.shape, rows, cols), radius, params):
                part[rows, cols] |= hole.astype(np.uint8)
    return out


def _is_facet(hole: np.ndarray, piece: np.ndarray, enc: torch.Tensor, backdrop: torch.Tensor, prob: torch.Tensor,
              radius: float, params: CutoutParams) -> bool:
    """``_fill_facets``' judgement of one hole, on its window (``hole``, the core ``piece`` as uint8, the
    frame and the backdrop model in sRGB, SegNet's probability; ``radius``: the hole's, from its area)."""
    # what the hole shows is read where the core has no piece (a web of its pixels departs by definition)
    at = torch.from_numpy(hole & (piece == 0)).to(enc.device)
    if not bool(at.any()) or float(prob[0, 0][at].mean()) < params.facet_p:
        return False
    windows = [t.clamp(0, 1) for t in (enc, backdrop)]
    seen, behind = (float(luminance(srgb_to_linear(wnd))[0, 0][at].mean()) for wnd in windows)
    colours = [wnd[0][:, at].mean(1) for wnd in windows]
    if float((colours[0] - colours[1]).abs().max()) < params.min_contrast or seen < params.facet_shade * behind:
        return False
    # (OpenCV's distance transform counts the window's border as far: a ring reaching past it is thick)
    return _hole_depth(piece, hole) - radius >= params.facet_ring * radius


def hole_candidates(mask: np.ndarray, max_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The holes of ``mask`` (uint8) HoleNet is asked about: (labels, stats, ids), from ``tasks.regions.holes``;
    ids of the holes of at least ``PIERCED_PX`` and at most ``max_share`` of the mask's area."""
    _, labels, stats = regions.holes(mask)
    area = stats[:, cv2.CC_STAT_AREA]
    ids = np.flatnonzero((area >= PIERCED_PX) & (area <= max_share * mask.sum()))
    return labels, stats, ids[ids > 0]


def _fill_learned_facets(core: np.ndarray, enc: torch.Tensor, backdrop: torch.Tensor, params: CutoutParams) -> np.ndarray:
    """Fill the holes of ``core`` HoleNet calls a facet or a face cut out (``facet_network_p``), read on
    windows around each (``models.holenet``), that lie deep in solid piece (``_hole_depth``). ``enc``/
    ``backdrop``: the frame and the backdrop model, sRGB."""
    from models.holenet import facet_probability, load_holenet, windows

    labels, stats, ids = hole_candidates(core, params.facet_network_share)
    if not len(ids):
        return core
    box = grown_box(torch.from_numpy(core)[None, None], 0)
    # a window (models.holenet.REACH = 2.5 times its hole's larger side, at least MIN_SIDE px, centred on
    # the hole) ends within two sides + 32 px of it: the arrays are read on the mask's box grown by that
    reach = int(max(stats[ids, cv2.CC_STAT_WIDTH].max(), stats[ids, cv2.CC_STAT_HEIGHT].max()) * 2) + 32
    rows = slice(max(box[0].start - reach, 0), box[0].stop + reach)
    cols = slice(max(box[1].start - reach, 0), box[1].stop + reach)
    hwc = lambda t: t[0, :, rows, cols].permute(1, 2, 0).float().cpu().numpy()  # noqa: E731
    shifted = stats.copy()
    shifted[:, cv2.CC_STAT_LEFT] -= cols.start
    shifted[:, cv2.CC_STAT_TOP] -= rows.start
    net = load_holenet(params.facet_network_weights)
    p = facet_probability(net, windows(hwc(enc), hwc(backdrop), core[rows, cols], labels[rows, cols], shifted, ids))
    fill = np.zeros(len(stats), bool)
    for k in ids[p >= params.facet_network_p]:
        # and only one deep in solid piece (at least half as thick around it as it is wide): the openings
        # HoleNet took for facets on real photos (pave openwork's arcs) are ringed by rows thinner than that
        at, hole, width = _hole_window(labels, stats, k)
        fill[k] = _hole_depth(core[at], hole) >= width + 2
    return core | fill[labels].astype(np.uint8)


def _largest_departure(enc: torch.Tensor, backdrop: torch.Tensor) -> torch.Tensor:
    """|enc - backdrop|, largest channel (1, 1, H, W), made a channel at a time."""
    largest = None
    for c in range(enc.shape[1]):
        d = (enc[:, c:c + 1] - backdrop[:, c:c + 1]).abs_()
        largest = d if largest is None else torch.maximum(largest, d, out=largest)
    return largest


def _spread(departure: torch.Tensor, quantized: bool = False) -> torch.Tensor:
    """Noise sigma of absolute departures (1-D): 1.4826 x their median. ``quantized``: against a clean
    plate. When a JPEG shot with little noise gives over half the backdrop the plate's very codes
    (median under half an 8-bit step) while its blocks still step by 0.01-0.02, the 90th percentile
    / 1.645 (the same sigma for Gaussian noise) is read instead; only then, as a shadow reaching the
    frame's edge would weigh in the 90th percentile."""
    sigma = 1.4826 * departure.median()
    if quantized and departure.numel() and float(sigma) < 1.4826 * 0.5 / 255:
        sample = departure[:: departure.numel() // 1_000_000 + 1]
        sigma = torch.maximum(sigma, quantiles(sample.float(), (0.9,))[0].to(sigma) / 1.645)
    return sigma


def _reference_pixels(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of ``mask``'s pixels, an even sample of at most a million of them."""
    at = mask.reshape(-1).nonzero().squeeze(1)
    return at[:: at.numel() // 1_000_000 + 1] if at.numel() > 1_000_000 else at


def _robust_sigma(enc: torch.Tensor, backdrop: torch.Tensor, at: torch.Tensor, quantized: bool = False) -> torch.Tensor:
    """Per-channel noise (``_spread``) of ``enc - backdrop`` over the pixels ``at`` (flat indices,
    ``_reference_pixels``) -> (1, C, 1, 1) (a channel at a time: the departure is never made whole)."""
    if at.numel() < 16:
        return enc.new_full((1, enc.shape[1], 1, 1), 0.01)
    spreads = [_spread((enc[0, c].reshape(-1)[at] - backdrop[0, c].reshape(-1)[at]).abs_(), quantized)
               for c in range(enc.shape[1])]
    return torch.stack(spreads).clamp(min=1e-3).view(1, -1, 1, 1)


MATTE_LEVELS = 8     # the matte's push-pull fills: colours from up to 2 ** 8 px away
OFF_LINE = 0.5      # how far off the backdrop-to-piece line (a share of its length) a mix can lie
OFF_NOISE = 3.0     # ... and at least this many times the backdrop's median noise distance (``_noise_distance``)


def _matte(image: torch.Tensor, hard: torch.Tensor, fallback: torch.Tensor, band: int,
           clear: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional alpha around the edge of ``hard``: c = a*F + (1-a)*B along the line B->F.

    F is the piece colour from just inside, B the backdrop from just outside
    (so a shadow or a coloured desk next to the piece is the B it is mixed
    with). Pixels on both sides of the edge are matted: the hard mask's own
    rim is often mixed. ``clear`` (bool): surely backdrop, alpha 0 there.
    Returns alpha and the image with the edge decontaminated (mixed pixels
    take F's colour, so no backdrop fringe survives compositing).

    Alpha is fractional only within ``band`` px of ``hard``: everything is made on the piece's
    box, and the push-pull fills on that box grown by their reach (their coarsest level's, as
    ``_matte_decided``'s): on a 24 MP frame their coarser levels over the whole frame were half the
    matte's time. A colour no mix of F and B makes takes the line's answer too: beside a chain on a
    real JPEG those are the bright ringing the line takes off a hard mask grown over it (stop 69:
    keeping ``hard``'s side there made a white fringe, though it kept more of a white chain's bright
    wire on the validation family).
    """
    alpha, whole = torch.zeros_like(hard), image
    piece = grown_box(hard, band + 2)
    if piece is None:
        return alpha, whole.clone()
    reach = _aligned(grow(piece, 2 ** MATTE_LEVELS, hard.shape[-2:]), 2 ** MATTE_LEVELS, hard.shape[-2:])
    box = tuple(slice(p.start - r.start, p.stop - r.start) for p, r in zip(piece, reach))    # the piece's, in reach
    image, hard = image[..., reach[0], reach[1]], hard[..., reach[0], reach[1]]
    inner = erode(hard, 1)
    # (fill_holes reads only the pixels its hole leaves known: no masked copy of the image is needed)
    fg_colour = fill_holes(image, inner < 0.5, levels=MATTE_LEVELS, box=box)
    back_local = fill_holes(image, dilate(hard, 1) > 0.5, levels=MATTE_LEVELS, box=box)   # 1 px margin: small holes keep their own B
    image, hard, inner = (t[..., box[0], box[1]] for t in (image, hard, inner))
    zone = dilate(hard, band) * (1 - inner)
    # alpha is fractional only in the zone, a band along the outline: the line is read there alone, as
    # (1, C, N, 1) columns (on a 24 MP frame's box its three-channel temporaries were 0.1 GB each)
    at = zone[0, 0] > 0
    column = lambda t: t[0][:, at][None, ..., None]  # noqa: E731
    soft = _between(column(image), column(fg_colour), column(back_local), column(fallback[..., piece[0], piece[1]]))
    a = (inner > 0).to(image.dtype)
    a[0, 0][at] = soft[0, 0, :, 0] * zone[0, 0][at]
    if clear is not None:
        a = a * (1 - clear[..., piece[0], piece[1]].to(a.dtype))
    alpha[..., piece[0], piece[1]] = a
    mixed = ((a > 0) & (a < 1))[0, 0]        # mixed pixels take the piece's colour: no backdrop fringe
    colours = fg_colour[0][:, mixed]
    del fg_colour, back_local, soft, zone    # the copy of the frame is made once these are gone
    decontaminated = whole.clone()
    decontaminated[0, :, piece[0], piece[1]][:, mixed] = colours
    return alpha, decontaminated


def _aligned(box: tuple[slice, slice], block: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown to whole ``block``s of a frame of ``shape`` (H, W): a push-pull fill made on it averages
    the same 2 x 2 blocks at every level (up to ``block``) as one made on the whole frame."""
    return tuple(slice(s.start // block * block, min(-(-s.stop // block) * block, n)) for s, n in zip(box, shape))


def _between(image: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, fallback: torch.Tensor,
             decided: torch.Tensor | None = None, noise: float = 0.0) -> torch.Tensor:
    """Alpha of each pixel of ``image`` on the line from the backdrop colour ``bg`` to the piece colour
    ``fg`` (clamped to [0, 1]); ``fallback`` where the two are too alike to tell (a colour distance
    under 0.1). With ``decided`` (the alpha the outline was decided with), a pixel off the line by
    more than ``OFF_LINE`` of its length and ``OFF_NOISE`` times the frame's ``noise``
    (``_noise_distance``), a colour no mix of the two makes, is no more backdrop than decided: a bright
    milgrain bead on a dark rim, which the line from the paper to the rim's colour filled in from
    inside calls backdrop. (Not more piece than the line says outside the decision: a JPEG's bright
    ringing beside a chain is off the line too.)"""
    span = fg - bg
    span_sq = (span * span).sum(1, keepdim=True)
    off = image - bg
    alpha = ((off * span).sum(1, keepdim=True) / span_sq.clamp(min=1e-4)).clamp_(0, 1)
    if decided is not None:
        off_sq = off.addcmul_(alpha, span, value=-1).square_().sum(1, keepdim=True)
        unmixed = off_sq > (OFF_LINE ** 2 * span_sq).clamp_(min=(OFF_NOISE * noise) ** 2)
        alpha = torch.where(unmixed, torch.maximum(alpha, decided), alpha)
    return torch.where(span_sq > 0.01, alpha, fallback)


def _noise_distance(image: torch.Tensor, backdrop: torch.Tensor) -> float:
    """The median colour distance of ``image``'s pixels where ``backdrop`` (bool) from their 3 x 3 mean:
    the scale of the camera's noise (and the paper's grain) there, 0 where there are none."""
    grain = (image - box_mean(image, 1)).square_().sum(1, keepdim=True).sqrt_()
    at = grain.reshape(-1)[_reference_pixels(backdrop)]     # a million of them tell the median
    return float(at.median()) if at.numel() else 0.0


def _small_parts(solid: np.ndarray, frame_px: int, params: CutoutParams) -> tuple[np.ndarray, np.ndarray]:
    """(labels, small): the 8-connected parts of ``solid`` (uint8) and which are under ``min_area`` of a
    frame of ``frame_px`` pixels (label 0, what lies outside every part, never)."""
    _, labels, stats, _ = regions.parts(solid)
    small = stats[:, cv2.CC_STAT_AREA] < params.min_area * frame_px
    small[0] = False
    return labels, small


def _islands(alpha: torch.Tensor, params: CutoutParams) -> torch.Tensor:
    """(1, 1, H, W) float: the parts of ``alpha`` > 0.5 smaller than ``min_area`` of the frame."""
    solid = (alpha[0, 0] > 0.5).cpu().numpy().astype(np.uint8)
    labels, small = _small_parts(solid, solid.size, params)
    return torch.from_numpy(small[labels].astype(np.float32)).to(alpha.device)[None, None]


def _matte_decided(image: torch.Tensor, decided: torch.Tensor, reach: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha at full size from ``decided``, the alpha decided on the frame shrunk and grown back to full
    size (bilinear), whose outline may lie up to ``reach`` px too far out (a pixel of the shrunk frame:
    its hard mask grows by one): 1 where it is 1 that far in, 0 where it is 0, and between
    them each pixel's place on the line from the backdrop colour just outside to the piece colour just
    inside, as ``_matte`` does it (``decided`` itself where the two are too alike, and at least
    ``decided`` where the pixel's colour is no mix of the two: ``_between``); those pixels take
    the piece colour. What is narrower than ``2 * reach`` (a wire, a link's gap) keeps its decided side.
    Made on the box of the edge grown by the fills' reach (their coarsest level's), not the frame; what
    is sure is read on the box of the piece grown by as much (beyond it all is backdrop: alpha 0)."""
    alpha = torch.zeros_like(decided)
    piece = grown_box(decided, 2 ** MATTE_LEVELS + reach + 1, threshold=1e-3)
    if piece is None:
        return alpha, image.clone()
    near = decided[..., piece[0], piece[1]]
    solid, clear = _inner(near >= 1 - 1e-3, reach), near <= 1e-3
    alpha[..., piece[0], piece[1]] = solid.to(image.dtype)
    edge = ~(solid | clear)
    at_edge = grown_box(edge.to(image.dtype), 2 ** MATTE_LEVELS, threshold=0.5)
    if at_edge is None:
        return alpha, image.clone()
    # the edge's box in frame px (it lies inside the piece's: the edge is where 0 < decided)
    box = tuple(slice(p.start + e.start, p.start + e.stop) for p, e in zip(piece, at_edge))
    part = image[..., box[0], box[1]]
    solid, clear = (t[..., at_edge[0], at_edge[1]] for t in (solid, clear))
    fg = fill_holes(part, ~solid, levels=MATTE_LEVELS)
    bg = fill_holes(part, ~clear, levels=MATTE_LEVELS)
    # the edge's pixels alone, as (1, C, N, 1) columns: a thin outline of the box's millions
    at = edge[0, 0, at_edge[0], at_edge[1]]
    column = lambda t: t[0][:, at][None, ..., None]  # noqa: E731
    prior = column(decided[..., box[0], box[1]])
    a = _between(column(part), column(fg), column(bg), prior, prior, _noise_distance(part, clear))[0, 0, :, 0]
    alpha[0, 0, box[0], box[1]][at] = a
    decontaminated = image.clone()
    mixed = at.clone()
    mixed[at] = (a > 0) & (a < 1)
    decontaminated[0, :, box[0], box[1]][:, mixed] = fg[0][:, mixed]
    return alpha, decontaminated


def _inner(mask: torch.Tensor, reach: int) -> torch.Tensor:
    """``mask`` (bool) eroded by ``reach`` px, save its parts narrower than that erosion leaves nothing of."""
    m = mask.to(torch.float32)
    eroded = erode(m, reach)
    return (eroded > 0.5) | (mask & (dilate(eroded, reach + 1) < 0.5))


def _cut_out_shrunk(frame: Frame, params: CutoutParams, why: str) -> Frame:
    """``cut_out`` of a frame larger than ``work_size``: every decision (the backdrop, the sure and faint
    piece, shadows, holes, facets, the network's checks) is made on the frame and its plate shrunk to
    ``work_size`` by area averaging, nearer the scale the per-pixel tests were made at (1-2 MP: a 24 MP
    frame's wire is 4-5x as wide, and each of its pixels carries more noise) and on a quarter of the
    pixels or fewer; the alpha is then matted at full size around the decided outline from the full
    frame's own colours (``_matte_decided``). The backdrop's way only (``params.method`` "backdrop": the
    full frame chose it; ``why``: how, for the notes)."""
    image = frame.image
    h, w = image.shape[-2:]
    size = shrunk_size((h, w), params.work_size)
    plate = None if frame.plate is None else resize(frame.plate, size)
    small = cut_out(Frame(resize(image, size), plate=plate), params)
    del plate
    reach = math.ceil(max(h, w) / params.work_size)
    alpha, decontaminated = _matte_decided(image, resize(small.alpha, (h, w)).clamp_(0, 1), reach)
    # the islands the shrunk frame's cut-out kept (in camera noise a chain's wire is found in pieces): the
    # only ones the matte at full size may leave
    _drop_islands_(alpha, params, resize(_islands(small.alpha, params), (h, w)) > 0)
    piece = alpha > 0.5
    return (frame.replace(image=decontaminated, alpha=alpha, flags=frame.flags + small.flags,
                          notes=frame.notes + small.notes).with_masks(piece=piece)
            .noted(f"cutout: {why}decided at {size[1]}x{size[0]}, matted at {w}x{h}"))


def _drop_islands_(alpha: torch.Tensor, params: CutoutParams, islands: torch.Tensor | None = None) -> None:
    """Set alpha to 0 (in place) on the islands the matte made: parts of ``alpha`` > 0.5 smaller than
    ``min_area`` of the frame (the floor ``_keep_components`` holds the hard mask to; not its share of
    the largest part, which would take a prong's tip the matte cut off), with the fringe around them
    that no kept part shares. A speck of dust or a JPEG block joined to the piece by a 1 px thread of
    the hard mask is a part of its own once the matte has made the thread fractional. ``islands`` (bool,
    the frame's size): islands the outline was decided to have (``_cut_out_shrunk``'s); one that
    touches them stays."""
    box = grown_box(alpha, 3, threshold=0.5)
    if box is None:
        return
    part = alpha[0, 0, box[0], box[1]]
    solid = (part > 0.5).cpu().numpy().astype(np.uint8)
    labels, small = _small_parts(solid, alpha.shape[-2] * alpha.shape[-1], params)
    if islands is not None and small.any():
        small &= np.bincount(labels[islands[0, 0, box[0], box[1]].cpu().numpy()], minlength=len(small)) == 0
    if not small[1:].any():
        return
    dropped = small[labels].astype(np.uint8)
    kept = solid & (1 - dropped)
    reach = np.ones((5, 5), np.uint8)     # the matte's band (2 px) on either side
    gone = (dropped > 0) | ((cv2.dilate(dropped, reach) > 0) & (cv2.dilate(kept, reach) == 0))
    part[torch.from_numpy(gone).to(part.device)] = 0


def matte_onto(frame: Frame, alpha: torch.Tensor | None, masks: dict[str, torch.Tensor], flags: tuple[str, ...],
               notes: tuple[str, ...]) -> Frame:
    """A cut-out (its ``alpha``, its ``masks`` and the ``flags`` and ``notes`` it raised) carried onto
    ``frame``, another rendering of the photo it was made on (its colour as shot, when the light
    neutralize estimated could not be confirmed on the piece): the edge is decontaminated from
    ``frame``'s own colours as ``_matte`` does it (a mixed pixel takes the piece's colour from the
    solid piece beside it). Cutting the photo out again would decide the same outline on a rendering
    whose backdrop is no more even, for 4-5 s of a 24 MP image's 30 (issue 13)."""
    image = frame.image
    # (on the piece's box grown by the fill's reach: the colour of solid piece near each edge pixel,
    # never whole-frame planes)
    box = None if alpha is None else grown_box(alpha, 2 ** MATTE_LEVELS, threshold=0.0)
    if box is not None:
        a, part = alpha[..., box[0], box[1]], image[..., box[0], box[1]]
        mixed = (a > 0) & (a < 1)
        if bool(mixed.any()):
            piece_colour = fill_holes(part, a < 1, levels=MATTE_LEVELS)
            image = image.clone()
            image[..., box[0], box[1]] = torch.where(mixed, piece_colour, part)
    return frame.replace(image=image, alpha=alpha, masks={**frame.masks, **masks}, flags=frame.flags + flags,
                         notes=frame.notes + notes)


def _network_cut(frame: Frame, handed: list[torch.Tensor], params: CutoutParams, why: str) -> Frame:
    """Piece probability from the segmentation network (on the image in sRGB, ``handed`` over: it goes
    once the network has read it, before the matte), edges matted against the local backdrop."""
    image = frame.image
    enc = handed.pop()
    prob = _piece_probability(enc, params)
    if params.network_fine_size:
        prob = _with_fine_wire(prob, _piece_probability(enc, params, size=params.network_fine_size))
    del enc
    core = (prob > 0.5).to(torch.uint8)[0, 0].cpu().numpy()
    hard = torch.from_numpy(_keep_components(core, params)).to(image)[None, None]
    alpha, decontaminated = _matte(image, hard, prob, params.band)
    piece = alpha > 0.5     # (bool, as a frame keeps a 0/1 mask: a float one would be tested whole first)
    area = int(piece.sum())
    unsure = float(((prob > 0.2) & (prob < 0.8)).sum()) / max(area, 1)
    result = frame.replace(image=decontaminated, alpha=alpha).with_masks(piece=piece)
    result = result.noted(f"cutout: {why}; network mask, unsure {unsure:.2f} of the piece, coverage {area / piece.numel():.3f}")
    if not hard.any():
        return result.flagged("mask_suspect", "cutout: no piece found")
    if unsure > params.max_unsure:
        result = result.flagged("mask_suspect", f"cutout: network unsure about {unsure:.0%} of the piece")
    return result


def cut_out(frame: Frame, params: CutoutParams) -> Frame:
    """Estimate alpha (B=1) for the piece against a smooth studio backdrop."""
    image = frame.image
    _, _, h, w = image.shape
    enc = linear_to_srgb(image)  # thresholds in a perceptual scale
    if frame.plate is None:
        backdrop_small, bg_small, fit_error, past_noise = fitted_sweep(enc, params)
    else:
        fit_error = past_noise = 0.0
    fallback = ""
    if params.method == "network" or (params.method == "auto" and fit_error > params.max_backdrop_residual):
        handed = [enc]      # 0.3 GB at 24 MP: nothing here holds it while the matte is made
        del enc
        cut = _network_cut(frame, handed, params, f"backdrop fit error {fit_error:.3f}")
        if params.method == "network" or past_noise > params.max_backdrop_residual or bool(cut.alpha.any()):
            return cut
        # the network saw no piece on a sweep that only camera noise kept from fitting (at its 384 px a
        # fine chain's wire is under a pixel): the backdrop model looks, with its ridges
        enc, fit_error = linear_to_srgb(image), past_noise
        fallback = "the network found no piece, the fit read past camera noise; "
    if params.work_size is not None and max(h, w) > params.work_size:
        # the network path decides at the network's sizes already: only the backdrop's way is shrunk
        del enc
        return _cut_out_shrunk(frame, params.model_copy(update={"method": "backdrop"}), fallback)
    if frame.plate is not None:
        # the studio's clean plate is the backdrop itself: fall-off, seams, paper texture, a desk's grain
        backdrop = linear_to_srgb(gaussian_blur(frame.plate, 1.0))
        diff = _largest_departure(enc, backdrop)
        border = frame_border(h, w, image.device)
        bg_ref = border & (diff < 4 * _spread(diff.masked_select(border), quantized=True))
    else:
        backdrop = resize(backdrop_small, (h, w))
        diff = _largest_departure(enc, backdrop)
        bg_ref = resize(bg_small, (h, w)) > 0.5
    # (masked_select: a bool index would make an int64 index of every pixel's four coordinates first)
    plated = frame.plate is not None
    noise = _spread(diff.masked_select(bg_ref), plated) if bg_ref.any() else diff.new_tensor(0.01)
    t_fg = max(params.fg_sigmas * float(noise), params.min_contrast)
    t_bg = max(params.bg_sigmas * float(noise), params.min_contrast / 2)

    # per channel (a strong white balance makes blue noisy), floored like the thresholds: an
    # already-retouched pure-white backdrop has no noise, only JPEG ripples
    # (big arrays are dropped as soon as they are read for the last time: a 24 MP frame is 288 MB each)
    at = _reference_pixels(bg_ref)
    sigma = _robust_sigma(enc, backdrop, at, plated).clamp(min=params.min_contrast / params.fg_sigmas)
    departure = ((enc[0, c] - backdrop[0, c]).cpu().numpy() for c in range(enc.shape[1]))   # a plane at a time
    edged = edge_strength(departure, bg_ref[0, 0].cpu().numpy()) >= params.edge_sigmas
    lines = ridge_lines(enc, backdrop, bg_ref, params) if float(noise) >= params.ridge_noise else None
    if lines is not None:
        edged |= lines      # a line is structure: a part it runs through does not fade into the backdrop
    # a shadow's colour departs a little from a grey darkening of the fitted sweep where the fill light
    # has another colour (on the plate path PlateNet judges the grey parts, and off its training world it
    # takes grey metal for a shadow: there the test stays strict)
    tolerance = 0.0 if plated else params.shadow_colour
    shade, faint, explained, tinted, grey_px = _shadow_scores(image, enc, backdrop,
                                                              _shadow_sigma(image, enc, backdrop, at, sigma), params,
                                                              tolerance)
    grey_px, shade_px = grey_px[0, 0].cpu().numpy(), shade[0, 0].cpu().numpy()     # (``_link_gaps``', after the fills)
    del at
    sure = diff > t_fg      # surely piece: the core's first evidence, and what later steps ask of a part
    thin = _thin_lines(enc, backdrop, sigma, params)
    core = sure | faint | thin
    explained_clean = None      # (on a clean file: with the lines that stand out from its ripples, ``_drop_clean_tints``)
    if tolerance:   # a wire's colour (a grey chain's) departs as little: lines and 2 px around them stay strict
        ridges = None if lines is None else torch.from_numpy(lines).to(thin.device)[None, None]
        if float(sigma.min()) < CLEAN_FILE_NOISE and params.network_checks:     # (its pass drops by the network's word)
            clean_lines = _thin_lines(enc, backdrop, sigma.clamp(min=CLEAN_FILE_NOISE), params)
            explained_clean = _tints_off_lines(explained, tinted, clean_lines, ridges)
            del clean_lines
        explained = _tints_off_lines(explained, tinted, thin, ridges)
        del ridges
    del faint, thin, tinted
    sure = sure[0, 0].cpu().numpy()
    core = core.to(torch.uint8)[0, 0].cpu().numpy()
    core = cv2.morphologyEx(core, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    trusted = frame.plate is not None and params.plate_network
    plain = _plain_backdrop(enc, backdrop, sigma, params)
    if trusted:
        # with a plate, PlateNet tells a piece from its shadow where per-pixel tests cannot (grey metal,
        # camera noise); at its ~384 px its edge is a few px off at full size, so only its inside is
        # piece outright and the edges stay the per-pixel tests'
        prob = _plate_probability(image, frame.plate, params)[0, 0].cpu().numpy()
        reach = math.ceil(max(h, w) / PLATE_SIZE)
        believed = (prob > 0.5).astype(np.uint8)
        core |= cv2.erode(believed, regions.disk(reach))
        core |= believed & ~plain       # and near its edge, what departs from the plate
        del believed
    else:
        prob = _piece_probability(enc, params)[0, 0].cpu().numpy() if params.network_checks else None
    grey = _grey(shade, explained, params)
    del explained
    flat = _flat(enc, sigma, params)
    core = _drop_shadows(flat, shade, grey, core, prob, edged, params, trusted)
    if explained_clean is not None:     # (made only with the tint tolerance, so without a plate, and SegNet's prob)
        core = _drop_clean_tints(flat, shade, _grey(shade, explained_clean, params), core, prob, edged, params)
    del explained_clean, flat
    # the lines are judged before they join (``_shadow_lines``), but with a plate PlateNet has judged the
    # shadows already; what they are judged by: a shadow's line has no highlight
    judge_lines = lines is not None and prob is not None and not trusted
    lit = (shade >= 1)[0, 0].cpu().numpy() if judge_lines else None
    del shade
    core = _drop_edgeless(core, edged, params)
    del edged
    core = _fill_enclosed_metal(core, plain, prob, params.hole_plain_share,
                                int(max(params.min_patch * core.sum(), params.min_patch_frame * h * w)))
    if prob is not None and not trusted:
        core = _drop_unseen_faint(core, prob, sure, params)
    # the lines join after the fills: they add wire, and never close an opening they outline (a
    # pendant's openwork, a bail's loop) into a region that is then filled as metal
    if lines is not None:
        core |= lines & ~_shadow_lines(lines, core, grey, lit, prob) if judge_lines else lines
    del prob, grey, lit
    wire_in_pieces = lines is not None
    del lines
    core = _fill_pinholes(core, enc[0].permute(1, 2, 0).cpu().numpy(), backdrop[0].permute(1, 2, 0).cpu().numpy(),
                          int(params.pinhole_frame * h * w), sure)
    del sure
    if params.network_checks:
        core = _fill_facets(core, enc, backdrop, params)
    learned = ""
    if params.facet_network and frame.plate is None:
        before = int(core.sum())
        core = _fill_learned_facets(core, enc, backdrop, params)
        learned = f", HoleNet filled {int(core.sum()) - before} px"
    del enc, backdrop
    gaps = _link_gaps(core, shade_px, grey_px)
    del shade_px, grey_px
    core[gaps] = 0
    sure_fg = torch.from_numpy(_keep_components(core, params)).to(image)[None, None]
    sure_bg = ((diff < t_bg) | torch.from_numpy(gaps).to(diff.device)[None, None]) & (sure_fg == 0)
    del gaps
    ramp = ((diff - t_bg) / max(t_fg - t_bg, 1e-4)).clamp_(0, 1)
    del diff
    alpha, decontaminated = _matte(image, sure_fg, ramp, params.band, clear=sure_bg)
    if not wire_in_pieces:      # (in camera noise the ridges find a wire in pieces: its small islands are wire)
        _drop_islands_(alpha, params)
    piece = alpha > 0.5
    result = frame.replace(image=decontaminated, alpha=alpha).with_masks(piece=piece)
    model = "the clean plate" if frame.plate is not None else f"a smooth fit (error {fit_error:.4f})"
    coverage = int(piece.sum()) / piece.numel()
    result = result.noted(f"cutout: {fallback}backdrop from {model}, noise {float(noise):.4f}, coverage {coverage:.3f}{learned}")
    if fit_error > params.max_backdrop_residual:
        result = result.flagged("mask_suspect", f"cutout: backdrop is not a smooth sweep (fit error {fit_error:.3f})")
    if not sure_fg.any():
        result = result.flagged("mask_suspect", "cutout: no piece found")
    return result
