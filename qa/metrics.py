"""Per-image QA metrics: did the retouch drift colour, lose detail, or cut badly?

Colour and detail metrics compare the retouched piece with the neutralized
input (the colour-corrected original), on the piece's interior; cut-out
metrics look at the matte itself and at what the input shows around it;
``background_a``/``background_b`` read the neutralized input's backdrop (the
exported backdrop is exactly white or the preset's colour by construction, so
the residual cast lives in the input the pipeline called neutral). Column
names are stable: they appear in ``OUT/qa/<shoot>/metrics.csv``, in
``manifest.csv`` and in the preset's QA rules. ``METRIC_DOCS`` says what each
one means; ``qa/faults.py`` and ``bench/qa.py`` calibrate the thresholds.
"""

from __future__ import annotations


import cv2
import numpy as np
import torch

from qa.evidence import EVIDENCE_DOCS
from qa.held import Held, as_held, qa_box
from tasks import regions
from tasks.color import delta_e2000, linear_to_srgb, rgb_to_lab
from tasks.compose import grown_box
from tasks.cutout import outline
from tasks.frame import Frame, luminance
from tasks.pipeline import FLAG_CODES
from tasks.ops import dilate, erode, gaussian_blur, quantiles

# columns of METRIC_DOCS the flow sets around compute_metrics (the shoot's survey, the exports, the worker)
FLOW_METRICS = ("sensor_dust_spots", "upscale", "worker_peak_mb", "started_at")

METRIC_DOCS = {
    "delta_e_mean": "mean CIEDE2000 between output and neutralized input over the piece interior",
    "delta_e_p95": "95th percentile of the same (catches local colour damage)",
    "detail_retention": "band-pass (DoG, sigma 1-2 px) energy of the output over the input, piece interior; 1 = all fine detail kept",
    "edge_recall": "share of the input's strong edges inside the piece still at least half as strong in the output",
    "hue_shift_metal": "chroma-weighted mean |CIELAB hue change| in degrees, output vs neutralized input, on the metal "
                       "(masks['metal'] from shine, piece interior); 0 when the image has no metal",
    "hue_shift_stone": "the same on the stones (masks['stones'] from gems); 0 when there are none",
    "background_a": "mean CIELAB a* of the neutralized input's backdrop (alpha < 0.01, > 12 px from the piece): "
                    "residual green(-)/magenta(+) cast neutralize left; 0 = neutral; 0 when the shoot gives its "
                    "light (kelvin): the backdrop then keeps its own colour, no cast (set by the flow)",
    "background_b": "mean CIELAB b* of the same: residual blue(-)/yellow(+) cast; 0 = neutral",
    "background_cast": "hypot(background_a, background_b): the residual cast's chroma",
    "thin_retention": "share of the input's thin structures (luminance top-hat, radius 3 px, within 12 px of the piece; "
                      "morphological skeleton) that the cut-out (alpha > 0.5) keeps within 1 px; 1 = all kept",
    "thin_gap": "largest run of those thin structures that the cut-out drops where it continues a thin part of the "
                "cut-out (a chopped chain link or prong tip), in skeleton px per 1000 px of the long edge; 0 = none",
    "edge_halo": "mean CIEDE2000 between the piece composited over white and pure white in the ring 2-4 px outside "
                 "the cut-out: a fringe or alpha bleeding around the piece; 0 = clean",
    "edge_halo_dark": "the same over a dark grey canvas (linear 0.05): a white or light fringe, invisible over "
                      "white, shows here",
    "upscale": "largest enlargement of the source's pixels in a canvas export (piece's long side on the canvas / "
               "in the source); above 1 the export is softer than the source (set by the flow)",
    "mask_coverage": "mean alpha: share of the frame that is piece",
    "outline_share": "outline pixels of the cut-out (alpha > 0.5) per piece pixel, at the frame's full size: the "
                     "IoU a 1 px error all along the outline would cost (a thin band or a chain's wire: 0.1-0.8)",
    "mask_components": "connected pieces in the mask (a pair of earrings is 2)",
    "mask_touches_frame": "share of the frame border covered by the piece (0 = piece fully inside)",
    "mask_holes": "enclosed holes (>= 4 px) in the cut-out: ring interiors, link gaps (a solid band has 0)",
    "mask_hole_area": "share of the cut-out's filled outline that is enclosed hole",
    "dust_area": "share of piece pixels the dust stage filled",
    "sensor_dust_spots": "sensor-dust spots found across the shoot and divided out of this image (set by the flow)",
    "worker_peak_mb": "peak resident memory of the worker process that made this image, MB, over its whole life "
                      "so far (set by the flow)",
    "started_at": "when the worker began this image, Unix seconds (set by the flow: a run's time line, the "
                  "throughput bench's start-up)",
    "clipped_before": "share of piece pixels with a clipped channel in the input",
    "clipped_after": "the same in the output",
    "clipped_increase": "clipped_after - clipped_before",
    "stage_flags": "count of stage warnings",
    **{f"flag_{c}": f"1 when a stage raised '{c}' (see the image's notes for why)" for c in FLAG_CODES},
    **EVIDENCE_DOCS,
}

# cut-out geometry (px): holes smaller than this are matting noise, not holes
HOLE_MIN_PX = 4
# thin structures: luminance top-hat radius, its sRGB contrast floor, and how far from the cut-out they are sought
THIN_RADIUS = 3
THIN_CONTRAST = 0.08
THIN_NEAR = 12


def _lab_at(rgb: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """CIELAB of the pixels of ``rgb`` (1, 3, H, W) where ``where`` (1, 1, H, W) holds, as (1, 3, N, 1)."""
    return rgb_to_lab(rgb[0][:, where[0, 0]][None, :, :, None])


def hue_shift(before: torch.Tensor, after: torch.Tensor, where: torch.Tensor) -> float:
    """Chroma-weighted mean |CIELAB hue change| in degrees over ``where``.

    ``before``/``after``: ``(1, 3, H, W)`` linear RGB; ``where``: ``(1, 1, H, W)`` bool.
    Weighting by the input's chroma keeps near-grey pixels (whose hue is noise) from
    dominating. Returns nan when ``where`` is empty.

    >>> x = torch.rand(1, 3, 8, 8); float(hue_shift(x, x, x[:, :1] > -1))
    0.0
    """
    if not bool(where.any()):
        return float("nan")
    lab0, lab1 = _lab_at(before, where), _lab_at(after, where)
    h0 = torch.atan2(lab0[:, 2], lab0[:, 1])
    h1 = torch.atan2(lab1[:, 2], lab1[:, 1])
    dh = torch.rad2deg(torch.atan2(torch.sin(h1 - h0), torch.cos(h1 - h0)).abs())
    weight = torch.hypot(lab0[:, 1], lab0[:, 2])
    return float((dh * weight).sum() / weight.sum().clamp(min=1e-6))


def mask_holes(piece: np.ndarray, min_px: int = HOLE_MIN_PX) -> tuple[int, float]:
    """Enclosed holes of a bool ``(H, W)`` mask: (count of holes >= ``min_px`` px, hole share of the filled outline).

    A hole is a 4-connected background region the frame border cannot reach.
    """
    m = piece.astype(np.uint8)
    if not m.any():
        return 0, 0.0
    n, _, stats = regions.holes(m)
    holes = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_px]
    area = float(sum(stats[k, cv2.CC_STAT_AREA] for k in holes))
    return len(holes), area / (area + float(m.sum()))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Morphological (Lantuejoul) skeleton of a bool mask: union of erosion residues."""
    img = mask.astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    skel = np.zeros_like(img)
    while img.any():
        eroded = cv2.erode(img, cross)
        skel |= img - cv2.dilate(eroded, cross)
        img = eroded
    return skel > 0


def thin_structures(y: np.ndarray, radius: int = THIN_RADIUS, contrast: float = THIN_CONTRAST) -> np.ndarray:
    """Lines and specks at most ``2 * radius + 1`` px wide that stand out by ``contrast`` from their surroundings.

    ``y``: ``(H, W)`` sRGB luminance. Bright and dark alike (white and black top-hat),
    after a 0.7 px Gaussian against sensor noise.
    """
    y = cv2.GaussianBlur(y.astype(np.float32), (0, 0), 0.7)
    k = regions.disk(radius)
    hat = np.maximum(cv2.morphologyEx(y, cv2.MORPH_TOPHAT, k), cv2.morphologyEx(y, cv2.MORPH_BLACKHAT, k))
    return hat > contrast


def thin_retention(y: np.ndarray, piece: np.ndarray, near: int = THIN_NEAR) -> tuple[float, float]:
    """(share kept, largest dropped run in px) of the input's thin structures around the cut-out.

    ``y``: the input's sRGB luminance ``(H, W)``; ``piece``: the cut-out, bool ``(H, W)``.
    Structures are sought within ``near`` px of the piece but not in its solid interior
    (eroded by ``near // 3``: kept by definition), reduced to their skeleton; a skeleton
    pixel is kept when the cut-out covers it within 1 px. A dropped run counts for the gap
    only when it touches a thin part of the cut-out (a link cut out of a chain, not lint
    on the sweep or a contact shadow along a solid outline).
    """
    if not piece.any():
        return float("nan"), float("nan")
    m = piece.astype(np.uint8)
    zone = (cv2.dilate(m, regions.disk(near)) > 0) & (cv2.erode(m, regions.disk(max(1, near // 3))) == 0)
    skel = skeleton(thin_structures(y) & zone)
    total = int(skel.sum())
    if total == 0:
        return 1.0, 0.0
    covered = cv2.dilate(m, regions.disk(1)) > 0
    missed = skel & ~covered
    gap = 0
    if missed.any():
        # a dropped run counts when it continues a thin part of the cut-out (a wire's cut end),
        # not when it runs along a solid outline (a contact shadow's crease)
        thin = (m > 0) & (cv2.morphologyEx(m, cv2.MORPH_OPEN, regions.disk(THIN_RADIUS)) == 0)
        ends = cv2.dilate(thin.astype(np.uint8), regions.disk(2)) > 0
        n, lab = regions.parts(cv2.dilate(missed.astype(np.uint8), np.ones((3, 3), np.uint8)))[:2]
        touching = set(np.unique(lab[ends & (lab > 0)]).tolist()) - {0}
        counts = np.bincount(lab[missed], minlength=n)
        gap = max((int(counts[k]) for k in touching), default=0)
    return float((skel & covered).sum()) / total, float(gap)


HALO_REACH = 6   # px beyond the piece (alpha > 0.5) the halo's ring and its dilations read


def edge_halo(foreground: torch.Tensor, alpha: torch.Tensor, canvas: float = 1.0) -> float:
    """Mean CIEDE2000 between the piece over a grey ``canvas`` (linear) and the canvas, 2-4 px outside alpha > 0.5.

    A clean matte is (nearly) 0 there; a fringe of the old backdrop or bleeding alpha is not.
    Over white (1.0) a dark fringe shows; over a dark canvas a white one does.
    """
    piece = (alpha > 0.5).to(alpha.dtype)
    ring = (dilate(piece, 4) > 0.5) & (dilate(piece, 1) < 0.5)
    if not bool(ring.any()):
        return float("nan")
    # the ring's pixels are gathered first: no composite of the whole box is made to read them
    a, fg = alpha[0][:, ring[0, 0]], foreground[0][:, ring[0, 0]]
    composite = rgb_to_lab((a * fg + (1 - a) * canvas)[None, :, :, None])
    plain = rgb_to_lab(torch.full_like(composite, canvas))
    return float(delta_e2000(composite, plain).mean())


def edge_halos(result: Frame) -> dict[str, float]:
    """``edge_halo`` over white and over dark grey (``edge_halo_dark``) of ``result``, on the piece's box.

    A fringe is a few of the frame's own pixels wide, so the flow reads these two at full size even where
    QA reads the rest at a pyramid level (``qa.held.qa_level``): at a 24 MP frame's level 2 the ring 2-4 px
    out lies past the 3-5 px grey fringe the full-size matte can leave there."""
    alpha = result.alpha
    box = None if alpha is None else grown_box(alpha, HALO_REACH)
    if box is None:
        return {"edge_halo": float("nan"), "edge_halo_dark": float("nan")}
    colour = result.foreground if result.foreground is not None else result.image
    colour, alpha = colour[..., box[0], box[1]], alpha[..., box[0], box[1]]
    return {"edge_halo": edge_halo(colour, alpha), "edge_halo_dark": edge_halo(colour, alpha, 0.05)}


def outline_share(alpha: torch.Tensor | None) -> float:
    """Outline pixels of the cut-out (alpha > 0.5, touching the outside, 8-neighbourhood) per piece pixel,
    on the piece's box; 0 without a piece. The IoU a 1 px error all along the outline costs: a thin band or
    a chain's wire reads 0.1-0.8, a solid ring or pendant 0.02-0.05 at 1.2 MP."""
    box = None if alpha is None else grown_box(alpha, 1)
    if box is None:
        return 0.0
    piece = (alpha[0, 0, box[0], box[1]] > 0.5).cpu().numpy()
    return float(outline(piece).sum()) / max(int(piece.sum()), 1)


def at_full_size(result: Frame) -> dict[str, float]:
    """The metrics a pyramid level would misread, made on ``result`` as given: a fringe (``edge_halos``) and
    the outline (``outline_share``, which doubles at a 24 MP frame's level 2) are a few of the frame's own px.
    ``compute_metrics(..., full=)`` reads them on the finished frame at full size where QA reads the rest at
    a level."""
    return {**edge_halos(result), "outline_share": outline_share(result.alpha)}


def _interior(alpha: torch.Tensor) -> torch.Tensor:
    return erode((alpha > 0.99).to(alpha.dtype), 2) > 0.5


def _band_energy(y: torch.Tensor, mask: torch.Tensor) -> float:
    dog = gaussian_blur(y, 1.0) - gaussian_blur(y, 2.0)
    return float((dog[mask] ** 2).sum())


def _gradient(y: torch.Tensor) -> torch.Tensor:
    gx = torch.zeros_like(y)
    gy = torch.zeros_like(y)
    gx[..., :, 1:-1] = (y[..., :, 2:] - y[..., :, :-2]) / 2
    gy[..., 1:-1, :] = (y[..., 2:, :] - y[..., :-2, :]) / 2
    return torch.hypot(gx, gy)


def compute_metrics(reference: Frame | Held, result: Frame, full: Frame | None = None) -> dict[str, float]:
    """Metrics for one image (B=1). ``reference`` is the frame after neutralize, whole or as QA holds it
    (``qa.held.hold``: on the piece's box, with its backdrop's cast read whole). ``full``: the finished
    frame at full size when ``result`` is it at a pyramid level (``qa.held.qa_level``): the metrics a
    level would misread (``at_full_size``) are read on it, once, not on the level as well.

    The whole frame gives the backdrop's cast, coverage and the frame-border share; everything else
    looks at the piece and a few pixels around it, so it is measured on the piece's box plus
    ``CROP_MARGIN`` (the same values: the widest filter reaches 3 x 4 px, the thin-structure search
    12 px), a fraction of a 24 MP frame's pixels.
    """
    alpha = result.alpha if result.alpha is not None else torch.zeros_like(result.image[:, :1])
    held = as_held(reference, result.alpha)
    whole = {"mask_coverage": float(alpha.mean())}
    whole["background_a"], whole["background_b"] = held.cast
    frame_piece = alpha > 0.5
    border = torch.cat([frame_piece[0, 0, 0], frame_piece[0, 0, -1], frame_piece[0, 0, :, 0], frame_piece[0, 0, :, -1]])
    whole["mask_touches_frame"] = float(border.float().mean())
    h, w = alpha.shape[-2:]
    box = qa_box(result.alpha, (h, w))
    before, result = held.reference_on(box), result.cropped(box)
    alpha = alpha[..., box[0], box[1]]
    piece = alpha > 0.5
    inner = _interior(alpha)
    after = result.foreground if result.foreground is not None else result.image
    # Outside the interior the edge band was decontaminated and the backdrop
    # replaced on purpose; keep those pixels equal so filters do not leak them in.
    after = torch.where(inner, after, before)
    m: dict[str, float] = {}
    if inner.any():
        de = delta_e2000(_lab_at(before, inner), _lab_at(after, inner)).flatten()   # the interior's pixels only
        m["delta_e_mean"] = float(de.mean())
        m["delta_e_p95"] = float(quantiles(de[:: max(1, de.numel() // 1_000_000)], (0.95,))[0])
        y0, y1 = linear_to_srgb(luminance(before)), linear_to_srgb(luminance(after))
        e0 = _band_energy(y0, inner)
        m["detail_retention"] = _band_energy(y1, inner) / e0 if e0 > 0 else 1.0
        g0, g1 = _gradient(y0), _gradient(y1)
        strong = inner & (g0 > max(0.05, float(quantiles(g0[inner][:: max(1, int(inner.sum()) // 1_000_000)], (0.9,))[0])))
        m["edge_recall"] = float((g1[strong] >= 0.5 * g0[strong]).float().mean()) if strong.any() else 1.0
    else:
        m.update(delta_e_mean=float("nan"), delta_e_p95=float("nan"), detail_retention=float("nan"), edge_recall=float("nan"))
    for name, key in (("hue_shift_metal", "metal"), ("hue_shift_stone", "stones")):
        layer = result.masks.get(key)
        where = inner & (layer > 0.5) if layer is not None else None
        # nothing of that kind on the piece: no hue to shift (0, not nan: nan fails the suite's not-null check)
        m[name] = hue_shift(before, after, where) if where is not None and bool(where.any()) else 0.0
    m.update(whole)
    m["background_cast"] = float(np.hypot(m["background_a"], m["background_b"]))
    mask_np = piece[0, 0].to(torch.uint8).cpu().numpy()
    y_in = linear_to_srgb(luminance(before))[0, 0].cpu().numpy()
    m["thin_retention"], gap = thin_retention(y_in, mask_np > 0)
    m["thin_gap"] = gap * 1000 / max(h, w)  # resolution-independent: per 1000 px of the frame's long edge
    m.update(at_full_size(result if full is None else full))
    m["mask_components"] = float(regions.parts(mask_np)[0] - 1)
    holes, hole_area = mask_holes(mask_np > 0)
    m["mask_holes"], m["mask_hole_area"] = float(holes), hole_area
    defects = result.masks.get("defects")
    m["dust_area"] = float((defects > 0.5)[piece].float().mean()) if defects is not None and piece.any() else 0.0
    if piece.any():
        m["clipped_before"] = float((before.amax(1, keepdim=True) >= 0.999)[piece].float().mean())
        m["clipped_after"] = float((after.amax(1, keepdim=True) >= 0.999)[piece].float().mean())
    else:
        m["clipped_before"] = m["clipped_after"] = 0.0
    m["clipped_increase"] = m["clipped_after"] - m["clipped_before"]
    m["stage_flags"] = float(len(result.flags))
    for code in FLAG_CODES:
        m[f"flag_{code}"] = float(code in result.flags)
    return m


def detail_loss_map(reference: Frame | Held, result: Frame) -> np.ndarray:
    """Per-pixel lost band-pass energy (H, W) in [0, 1], for the review overlay (``reference`` whole or
    held). Outside the piece the output is read as the input, so the map is 0 there beyond the filters'
    12 px: only the piece's box is filtered."""
    held = as_held(reference, result.alpha)
    after = result.foreground if result.foreground is not None else result.image
    h, w = after.shape[-2:]
    if result.alpha is None:
        piece, box = torch.ones_like(after[:, :1], dtype=torch.bool), (slice(0, h), slice(0, w))
    else:
        piece, box = result.alpha > 0.5, grown_box(result.alpha, 16)
    loss = np.zeros((h, w), np.float32)
    if box is None:
        return loss
    before, piece = held.reference_on(box), piece[..., box[0], box[1]]
    after = torch.where(piece, after[..., box[0], box[1]], before)
    y0 = linear_to_srgb(luminance(before))
    y1 = linear_to_srgb(luminance(after))
    d0 = (gaussian_blur(y0, 1.0) - gaussian_blur(y0, 2.0)).abs()
    d1 = (gaussian_blur(y1, 1.0) - gaussian_blur(y1, 2.0)).abs()
    loss[box] = (gaussian_blur((d0 - d1).clamp(min=0), 2.0) / 0.02).clamp(0, 1)[0, 0].cpu().numpy()
    return loss
