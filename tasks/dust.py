"""dust: remove dust, lint, scratches and fingerprint haze; spare the design.

Needs: linear RGB and, when available, the piece mask from ``cutout``.

A dust speck and a milgrain bead, a scratch and an engraved line look alike
to any filter; a retoucher tells them apart by context: design details
repeat (pave in grids, milgrain in rows) and follow the metal's form
(grooves, prongs), dust does not. So:

* On the backdrop everything small and darker than its surroundings goes
  (a morphological black-hat: closing minus image); nothing there is design.
  Only where the backdrop is kept (``backdrop``: the background stage is
  skipped): a backdrop the background stage replaces shows none of it, and
  on a desk, kraft paper or a noisy sweep the black-hat takes 20-90% of the
  frame, work no export shows, a defects mask the review overlay and the
  generative fill would be handed whole.
* On the piece, ``models/defectnet`` (a 48 k-parameter dilated CNN trained on
  the simulator, whose defects and details have exact masks) marks removable
  defects (specks, lint, scratches) and fingerprint haze. A marked blob must
  also stand out locally (the classical evidence), must not lie on the
  piece's outline (its anti-aliased steps), and must not have more than
  ``neighbours`` others close by (what repeats is design) to be repainted.
* Specks, lint and scratches are filled from their surroundings (push-pull,
  ``tasks.ops.fill_holes``); fingerprint haze is a low-contrast ridge pattern
  on flat polished metal, so its area is replaced by a low-pass of itself
  (ridges of a 2-4 px period are gone, the metal's shading stays).
* Every size above is in pixels of the frame as given, unless ``work_size`` is set: then a
  frame whose longer side is larger is shrunk to it for the finding (DefectNet and these
  rules were made on 640-1536 px frames; a 24 MP back sees a speck 4x as many pixels across)
  and what was found is enlarged back and repainted at full size. Shrunk, a diamond's dark
  culet or a pave seat's dark gap is a speck's size too, and the network was never taught dust
  on stones: there a blob is repainted only on a smooth surround (``smooth_surround``). On
  simulated scenes seen at 4x their resolution this finds 10x the specks the full-size finding
  does and a 24 MP frame's dust takes a third of the time; but a row of design details small
  enough to merge into a line when shrunk (2-5 px pave stones at 4800 px) is repainted as a
  scratch, so it is off by default (README).
* Sensor dust found across the whole shoot (``masks['sensor_dust']``, set
  before the stages) was already divided out; it is reported here too.

Output: ``masks['defects']`` (everything repainted, the haze included): it
feeds QA and the review overlay. (No separate haze layer: nothing read it,
and at 24 MP each layer is 96 MB held to the end of the image.)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks import regions
from tasks.color import linear_to_srgb
from tasks.compose import grow, grown_box
from tasks.frame import Frame, luminance
from tasks.ops import closing, dilate, erode, fill_holes, gaussian_blur, opening, resize


class DustParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    radius: int = Field(4, ge=1, le=16, description="largest speck radius in px on the backdrop")
    contrast: float = Field(0.05, gt=0, le=1, description="darker than surroundings by this much (sRGB) to count on the backdrop")
    backdrop: bool = Field(True, description="also clear specks on the backdrop; the pipeline turns it off when the "
                           "background stage replaces the backdrop (nothing there would show)")
    strength: float = Field(0.5, gt=0, lt=1, description="network probability above which a piece pixel is a defect; "
                                                         "lower removes more (and risks design)")
    min_local_contrast: float = Field(0.02, ge=0, le=1, description="a defect on the piece must differ from its "
                                                                    "surroundings by this much (sRGB)")
    haze: bool = Field(True, description="also clear fingerprint haze on polished metal")
    min_haze_area: int = Field(40, ge=1, description="smallest haze patch in px")
    neighbours: int = Field(4, ge=0, description="a blob on the piece with more defects than this nearby is texture, not dust")
    neighbourhood: int = Field(24, ge=4, description="radius in px of that neighbourhood on a frame up to "
                               "RULES_EDGE (1536 px) long; a longer frame's grows with its long edge (``crowd_radius``)")
    max_pinhole: int = Field(150, ge=0, description="holes in the piece mask up to this many px are specks, not outline")
    grow: int = Field(1, ge=0, le=8, description="px added around each defect before filling")
    work_size: int | None = Field(None, ge=128, description="longest side in px at which defects are found (every "
                                  "size above is then in its pixels): larger frames are shrunk to find them and "
                                  "repainted at full size; None: found at full size")
    smooth_surround: float = Field(0.06, ge=0, description="on a frame shrunk to ``work_size`` only: a blob on the piece "
                                   "is repainted where the ring 3-8 px around it (working px) has a mean gradient "
                                   "under this share of its mean light (a speck lies on smooth metal; a diamond's "
                                   "culet or a seat's dark gap, shrunk to a speck's size, lies among edges)")
    network_weights: str | None = Field(None, description="DefectNet checkpoint; None = the weights shipped in models/defectnet")
    network_bfloat16: bool = Field(True, description="DefectNet's convolutions in bfloat16 where the hardware does them "
                                   "natively (CUDA, CPUs with AVX512-BF16 or AMX): 2-3x faster, probabilities within ~3e-3")


# how far the haze blend reads from the haze: 1 px grown, a 1 px Gaussian (3 px), a 2 px Gaussian (6 px);
# made on the haze's box grown by more, it equals the whole-frame blend (px of the working size)
HAZE_REACH = 16


# the long edge (px) of the frames DefectNet and the rules around it were made on (640-1536 px)
RULES_EDGE = 1536


def crowd_radius(size: tuple[int, int], params: DustParams) -> int:
    """``neighbourhood`` for a frame of ``size`` (H, W): grown with a long edge over ``RULES_EDGE``, so a row
    of milgrain beads 4x as far apart in px at a camera's resolution is still a crowd (at 4800 x 3200 the
    24 px radius took runs of a band's bead rows for dust: 6% of its design features repainted)."""
    return round(params.neighbourhood * max(1.0, max(size) / RULES_EDGE))


def work_scale(size: tuple[int, int], params: DustParams) -> float:
    """The factor (<= 1) that brings a frame of ``size`` (H, W) to the size defects are found at."""
    return 1.0 if params.work_size is None else min(1.0, params.work_size / max(size))


def backdrop_specks(image: torch.Tensor, params: DustParams) -> torch.Tensor:
    """Small dark blobs and fibres (B, 1, H, W) anywhere; the caller keeps those off the piece."""
    y = linear_to_srgb(luminance(image))
    return ((closing(y, params.radius) - y) > params.contrast).to(image.dtype)


# px around the piece (grown by 2) where DefectNet's answer is read: blobs and haze beside the piece
BOX_MARGIN = 24


def piece_defects(image: torch.Tensor, piece: torch.Tensor | None, at: tuple[slice, slice] | None,
                  params: DustParams, shrunk: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple[slice, slice]]:
    """(removable, haze) masks (B, 1, h, w) on the piece, from DefectNet plus local contrast, made on the
    piece's box (returned third: the masks are 0 beyond it). ``at``: the box of ``piece`` (a bool
    mask, not empty); without a piece, the whole frame. ``shrunk``: ``image`` is the frame shrunk to
    ``work_size``, where only blobs on a smooth surround are removable (``_on_smooth_surround``).

    The box holds the piece grown by 2 px and by the network's ``BOX_MARGIN`` px around that: every
    filter and component count below gives there what it gives on the whole frame (beyond the box
    there is only backdrop), without whole-frame masks (96 MB each at 24 MP). DefectNet's answer is read
    no further: on a frame longer than ``RULES_EDGE`` a blob's crowd reaches past it, and specks on the
    backdrop there are not counted (they are not the design repeating)."""
    from models.defectnet import defect_probability, load_defectnet

    h, w = image.shape[-2:]
    box = grow(at, 2 + BOX_MARGIN, (h, w)) if piece is not None else (slice(0, h), slice(0, w))
    ys, xs = box
    piece = piece[..., ys, xs].to(image.dtype) if piece is not None else None
    region = dilate(piece, 2) if piece is not None else torch.ones_like(image[:, :1])
    srgb = linear_to_srgb(image[..., ys, xs])     # (clamped to [0, 1] by the curve)
    net = load_defectnet(params.network_weights, image.device)
    with torch.no_grad():
        # the network's answer is read on the piece and ``BOX_MARGIN`` px around it, not as far as a blob's
        # crowd (backdrop specks further off are not the design repeating; at 24 MP that reach was a quarter
        # of dust's time): parts beyond are not run, and what a run part gives beyond is not read, so how
        # the network is cut into parts (a CPU's bands of 96 rows, CUDA's 512) does not change what is found
        near = dilate(region, BOX_MARGIN)
        prob = defect_probability(srgb.float(), net, where=near, bfloat16=params.network_bfloat16).to(image.dtype)
        prob.mul_(near)
    del near
    y = luminance(srgb)
    del srgb
    # classical evidence: the blob differs from a 3 px median-like surround (opening/closing envelope)
    local = torch.maximum(closing(y, 3) - y, y - opening(y, 3))
    stands_out = dilate((local > params.min_local_contrast).to(image.dtype), 1)
    removable = (prob[:, :1] > params.strength).to(image.dtype) * stands_out
    # design repeats (pave seats, milgrain, beads): a blob with several others close by is texture
    removable = _uncrowded(removable, params.neighbours, crowd_radius((h, w), params))
    if shrunk:
        removable = _on_smooth_surround(removable, y, params.smooth_surround)
    if piece is not None:
        # the outline's anti-aliased, decontaminated steps are not dust: blobs lying on it stay
        solid = torch.maximum(piece, _components(1 - piece, max_area=params.max_pinhole))
        outline = dilate(piece, 1) - erode(solid, 1)
        removable = _components(removable, touching=outline, share=0.5, keep=False)
    haze = torch.zeros_like(removable)
    if params.haze:
        patch = opening((prob[:, 1:] > 0.5).to(image.dtype), 1)
        haze = _components(patch, min_area=params.min_haze_area)
    return removable * (piece if piece is not None else 1), haze * region, box


# the ring around a blob whose smoothness ``_on_smooth_surround`` reads: from 3 px out (past the blob's own
# soft edge and the 1 px blur) to 8 px (px of the working size)
SURROUND = (3, 8)


def _on_smooth_surround(mask: torch.Tensor, y: torch.Tensor, max_gradient: float) -> torch.Tensor:
    """Keep the components of ``mask`` whose surround (``SURROUND``, other blobs left out) has a mean
    gradient of ``y`` (sRGB luminance, on a 1 px Gaussian) under ``max_gradient`` of its mean light.

    On a frame shrunk to the working size a diamond's dark culet, the dark gap of a pave seat or an
    eyelet's shaded inside is a speck's size, and DefectNet (never taught dust on stones) marks it;
    filled from its surround it smears the stone's facet pattern. A speck on the piece lies on smooth
    metal. Counted blob by blob (stop 74): at 0.06 the simulator's blobs on specks keep 87% (its scenes as
    rendered and 4x enlarged, shrunk to 2048), a retouched 3872 px pave teardrop's false blobs 8% of
    their pixels."""
    m = (mask[0, 0] > 0.5).cpu().numpy().astype(np.uint8)
    n, labels, stats, _ = regions.parts(m)
    if n <= 1:
        return mask
    light = y[0, 0].float().cpu().numpy()
    gy, gx = np.gradient(cv2.GaussianBlur(light, (0, 0), 1.0))
    gradient = np.hypot(gx, gy)
    inner, outer = regions.disk(SURROUND[0]), regions.disk(SURROUND[1])
    keep = np.zeros(n, bool)
    for k in range(1, n):     # each blob on its own window: a few hundred, never the box's planes
        win = grow((slice(stats[k, 1], stats[k, 1] + stats[k, 3]), slice(stats[k, 0], stats[k, 0] + stats[k, 2])),
                   SURROUND[1], m.shape)
        blob = (labels[win] == k).astype(np.uint8)
        ring = (cv2.dilate(blob, outer) > 0) & (cv2.dilate(blob, inner) == 0) & (m[win] == 0)
        if not ring.any():
            continue
        keep[k] = gradient[win][ring].mean() < max_gradient * max(float(light[win][ring].mean()), 0.05)
    return torch.from_numpy(keep[labels]).to(mask)[None, None]


def _uncrowded(mask: torch.Tensor, neighbours: int, radius: int) -> torch.Tensor:
    """Drop components with more than ``neighbours`` other components within ``radius`` px."""
    m = (mask[0, 0] > 0.5).cpu().numpy().astype(np.uint8)
    n, labels, _, centroids = regions.parts(m)
    if n <= 1:
        return mask
    points = np.zeros(m.shape, np.float32)
    # a centre rounds half up, not to even: the same blob counts alike on the piece's box and on the frame
    ix = np.floor(centroids[1:, 0] + 0.5).astype(int).clip(0, m.shape[1] - 1)
    iy = np.floor(centroids[1:, 1] + 0.5).astype(int).clip(0, m.shape[0] - 1)
    np.add.at(points, (iy, ix), 1.0)
    k = 2 * radius + 1
    density = cv2.boxFilter(points, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    keep = np.zeros(n, bool)
    keep[1:] = density[iy, ix] - 1 <= neighbours
    return torch.from_numpy(keep[labels]).to(mask)[None, None]


def _components(mask: torch.Tensor, *, min_area: int = 1, max_area: int | None = None,
                touching: torch.Tensor | None = None, share: float = 0.0, keep: bool = True) -> torch.Tensor:
    """8-connected components of ``mask`` with ``min_area`` to ``max_area`` px; with ``touching``, only those
    with more than ``share`` of their pixels on it (``keep=True``) or only the others (``keep=False``)."""
    m = (mask[0, 0] > 0.5).cpu().numpy().astype(np.uint8)
    n, labels, stats, _ = regions.parts(m)
    chosen = np.zeros(n, bool)
    chosen[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    if max_area is not None:
        chosen[1:] &= stats[1:, cv2.CC_STAT_AREA] <= max_area
    if touching is not None:
        on = np.bincount(labels[(touching[0, 0] > 0.5).cpu().numpy()], minlength=n)
        hit = on > share * stats[:, cv2.CC_STAT_AREA]   # (a bincount of the labels would copy them to int64)
        chosen[1:] &= hit[1:] == keep
    return torch.from_numpy(chosen[labels]).to(mask)[None, None]


def soften_haze_(image: torch.Tensor, haze: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Blend ``image`` toward its 2 px blur where ``haze`` is (feathered by 1 px), in place, and return it;
    px of the working size, ``scale`` of this frame's (a 6000 px frame found at 2048 px: 2 / 0.34 px).

    The same as ``image * (1 - soft) + gaussian_blur(image, 2.0) * soft`` over the whole frame, made on
    the haze's box only (``HAZE_REACH``): elsewhere ``soft`` is 0."""
    box = grown_box(haze, math.ceil(HAZE_REACH / scale), threshold=0.0)
    if box is not None:
        part = image[..., box[0], box[1]]
        soft = gaussian_blur(dilate(haze[..., box[0], box[1]], round(1 / scale)), 1.0 / scale).clamp(0, 1)
        part.copy_(part * (1 - soft) + gaussian_blur(part, 2.0 / scale) * soft)
    return image


def remove_dust(frame: Frame, params: DustParams) -> Frame:
    """Find and repaint defects; what was repainted is reported in ``masks['defects']``."""
    piece = frame.masks.get("piece")
    image = frame.image
    h, w = image.shape[-2:]
    at = grown_box(piece, 0) if piece is not None else None     # the piece's box, found once
    scale = work_scale((h, w), params)
    if scale < 1:
        # found on the frame shrunk to the working size (``grow`` included) and enlarged back
        small = (round(h * scale), round(w * scale))
        small_piece = None if piece is None else resize(piece.float(), small) > 0.5
        small_at = None if small_piece is None else grown_box(small_piece, 0)
        hole, haze = find_defects(resize(image, small), small_piece, small_at, params, shrunk=True)
        hole, haze = (resize(m, (h, w)) > 0.5 for m in (hole, haze))
        hole, haze = hole.to(image.dtype), haze.to(image.dtype)
    else:
        hole, haze = find_defects(image, piece, at, params)
    image = soften_haze_(_filled(image, hole), haze, scale)
    defects = (hole > 0.5) | (haze > 0.5)     # (bool, as a frame keeps its 0/1 masks)
    if "sensor_dust" in frame.masks:
        defects |= frame.masks["sensor_dust"] > 0.5
    on_piece = float(defects.sum()) if piece is None else _sum_on(defects, piece, at)
    return frame.replace(image=image).with_masks(defects=defects).noted(
        f"dust: {int(float(hole.sum()))} px filled, {int(float(haze.sum()))} px of haze cleared, "
        f"{int(on_piece)} px on the piece" + (f" (found at {small[1]}x{small[0]})" if scale < 1 else ""))


def _filled(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """A new tensor: ``image`` with ``hole`` filled by push-pull, made on the holes' box only (the fill's
    coarser levels still read the whole frame, so the values are the whole-frame fill's); no hole, no fill."""
    box = grown_box(hole, 0, threshold=0.0)
    filled = image.clone()
    return filled if box is None else fill_holes(image, hole > 0.5, box=box, out=filled)


def find_defects(image: torch.Tensor, piece: torch.Tensor | None, at: tuple[slice, slice] | None,
                 params: DustParams, shrunk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(hole, haze) masks (B, 1, H, W) of ``image``, in its own pixels: what to fill (the defects grown by
    ``grow``) and the fingerprint haze to soften. ``at``: the box of ``piece`` (None: no piece, or empty);
    ``shrunk``: ``image`` is the frame shrunk to ``work_size`` (``piece_defects``)."""
    h, w = image.shape[-2:]
    removable, haze = torch.zeros_like(image[:, :1]), torch.zeros_like(image[:, :1])
    if piece is None or at is not None:
        on_box, haze_on_box, (ys, xs) = piece_defects(image, piece, at, params, shrunk)
        removable[..., ys, xs], haze[..., ys, xs] = on_box, haze_on_box
        del on_box, haze_on_box
    if piece is not None and params.backdrop:
        # a backdrop blob touching the piece is its outline or shadow, not dust
        near = torch.zeros((1, 1, h, w), dtype=torch.bool, device=image.device)
        if at is not None:
            ys, xs = grow(at, 2, (h, w))
            near[..., ys, xs] = dilate(piece[..., ys, xs].to(image.dtype), 2) > 0.5
        removable = torch.maximum(removable, _components(backdrop_specks(image, params), touching=near, keep=False))
        del near
    return dilate(removable, params.grow), haze


def _sum_on(mask: torch.Tensor, piece: torch.Tensor, at: tuple[slice, slice] | None) -> float:
    """Sum of ``mask`` over ``piece`` (bool), on the piece's box ``at`` (no whole-frame product)."""
    if at is None:
        return 0.0
    return float((mask[..., at[0], at[1]] * piece[..., at[0], at[1]]).sum())
