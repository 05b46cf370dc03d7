"""Evidence QA gathers itself, so the gate does not trust the stages.

The metrics in ``qa/metrics.py`` compare a stage's output with its own input;
a cut-out that calls a polished face a hole, or a correction that reads beige
paper as warm light, passes them. Here every check brings evidence the stage
did not decide with:

- **the backdrop seen through a hole**: every hole of the cut-out must look
  like the backdrop (the shoot's clean plate, or a smooth surface fitted to
  the frame, at most darkened
  by a grey shadow, no texture); a face mirroring the sweep is brighter or
  darker in patches, carries engraving or highlights, and is not;
- **holes in solid piece**: a hole of the design is ringed by wire or a band
  no thicker than itself; a small hole deep inside metal or a stone is a
  highlight or a facet that matched the backdrop, whatever its colour;
- **piece pixels that are plain backdrop**: opaque mask pixels that match the
  unshaded backdrop exactly (a white fringe, a link loop or a gap between
  stones filled with backdrop);
- **a second cut-out**: the segmentation network, asked about the whole
  scene, must agree with the final mask at its own resolution;
- **the source's own edges**: the cut-out's outline must run along an edge
  of the source; where the photo shows none, the outline follows a shadow's
  fade, a face mirroring the sweep, or swallows a chain's link gaps;
- **shadow slabs and stray parts**: opaque regions that are only a grey,
  flat darkening of the backdrop and that the network calls background;
  mask components apart from the piece that do not look like piece;
- **colour against the source**: what neutralize changed on the piece, how
  coloured the backdrop was in the source when the light was estimated from
  it, and whether the corrected metal has a colour metal can have.

Each finding carries a stable code, words for the reviewer and a box in
source pixels; ``overlay`` marks where the evidence disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from tasks import regions
from tasks.color import LUMINANCE, delta_e2000, linear_to_srgb, rgb_to_lab, srgb_to_linear
from tasks.compose import grow, grown_box
from tasks.cutout import CutoutParams, component_mean, edge_strength, fitted_sweep, frame_border, outline
from qa.held import CROP_MARGIN, Held
from tasks.frame import Frame
from tasks.ops import SAMPLE_ABOVE, gaussian_blur, resize, resize_at, row_bands

EVIDENCE_DOCS = {
    "hole_suspect_area": "area of the cut-out's holes that do not look like the backdrop seen through them "
                         "(textured, patchy or called piece by the network), per piece area",
    "holes_in_piece": "small holes of the cut-out (9 px to 1% of the piece) deep inside solid piece: the piece "
                      "around is over twice as thick as the hole's radius (a highlight or a stone's facet cut out)",
    "piece_backdrop_share": "opaque piece pixels in blobs that are exactly the plain, unshaded backdrop "
                            "(fringes, filled link loops or gaps between stones), per piece area",
    "cutout_disagreement": "area where the segmentation network and the final mask disagree by more than 0.5, "
                           "at the network's resolution, per piece area",
    "edge_unsupported": "share of the cut-out's outline where the source shows no edge (gradient on a 1 px "
                        "Gaussian below 4 noise sigmas within 1 px)",
    "shadow_slab_share": "opaque piece pixels that are only a flat grey darkening of the backdrop and that the "
                         "network calls background (contact shadows, reflections), per piece area",
    "stray_components": "mask components apart from the largest that neither the network nor their colour "
                        "or texture call piece",
    "neutralize_delta_e": "mean CIEDE2000 between the source (before neutralize) and the neutralized piece: "
                          "how much the colour correction changed the piece",
    "source_backdrop_chroma": "CIELAB chroma of the backdrop in the source: how coloured the light + backdrop were",
    "cast_unverified": "1 when the light was estimated from a backdrop that was coloured in the source and the "
                       "piece's most neutral bright parts (which a coloured light tints, coloured paper does not) "
                       "sit nearer neutral than the backdrop's colour, or the piece has none to tell; 0 with a "
                       "known light or plate",
    "metal_chroma": "median CIELAB chroma of the finished metal",
    "metal_hue": "chroma-weighted mean CIELAB hue (degrees) of the finished metal",
    "metal_implausible": "1 when the finished metal is coloured (chroma > 8) with a hue no gold or white metal has "
                         "(outside 25-100 deg): a wrong correction (gold turned green, white metal blue)",
}

FINDING_TEXT = {
    "hole_not_backdrop": "a hole in the piece does not look like the backdrop seen through it (a face or a "
                         "stone cut out?)",
    "hole_in_piece": "a small hole deep inside solid metal or a stone (a highlight or a facet that matches the "
                     "backdrop cut out; a hole of the design is ringed by wire no thicker than itself)",
    "backdrop_in_piece": "part of the piece is plain backdrop (a fringe, or a link loop / gap between stones "
                         "filled in)",
    "cutout_disagree": "the second cut-out (segmentation network) disagrees with the mask here",
    "edge_unsupported": "the cut-out's edge runs where the photo shows no edge (a shadow's fade, a face "
                        "mirroring the backdrop, or link gaps swallowed)",
    "shadow_slab": "a flat grey darkening of the backdrop (shadow or reflection) is kept as piece",
    "stray_part": "a separate part of the mask does not look like piece (dust, shadow, clutter)",
    "cast_unverified": "the light was estimated from a coloured backdrop (coloured paper, or strong light?) "
                       "with no known light or plate to confirm it",
    "metal_implausible": "the finished metal has a colour no gold or white metal has (wrong colour correction?)",
}

# the metric each finding is measured by: a finding is shown when a rule on that metric fails
FINDING_METRIC = {
    "hole_not_backdrop": "hole_suspect_area", "hole_in_piece": "holes_in_piece",
    "backdrop_in_piece": "piece_backdrop_share",
    "cutout_disagree": "cutout_disagreement", "edge_unsupported": "edge_unsupported",
    "shadow_slab": "shadow_slab_share", "stray_part": "stray_components",
    "cast_unverified": "cast_unverified", "metal_implausible": "metal_implausible",
}

# noise units on a 1.5 px Gaussian average: 1 / (2 sqrt(pi) 1.5)
SMOOTH_NOISE = 0.19
PLAIN_SIGMAS = 3.0        # |departure| from the unshaded backdrop, averaged, that is still plain backdrop
EXPLAINED_SIGMAS = 4.0    # colour a grey shade of the backdrop cannot explain, averaged
FIT_FLOOR = 0.012         # sRGB: below this a departure from the fitted backdrop is the fit's, not the scene's
TEXTURE_SIGMAS = 4.0      # high-pass |departure| that is texture (engraving, highlights), not noise
HOLE_BACKDROP_SHARE = 0.6 # a hole is backdrop when this share of its core is explained and flat
BACKDROP_BLOB_PX = 20      # smallest blob of plain backdrop in the piece counted (the 2 px opening leaves less as noise)
PIERCED_RATIO = 1.5       # piece around a hole, in hole radii, that makes it a hole in solid piece
PIERCED_MIN_PX = 9        # smallest such hole counted (3 x 3 px is seen at 1:1 over a contrasting backdrop)
PIERCED_MAX_SHARE = 0.01  # and largest, per piece area: a ring's interior seen from low is narrow, its shank thick
SEE_THROUGH = 0.9         # alpha up to this lets a dark page show through; above it a pixel hides it
CAST_LOG_CHROMA = 0.10    # log-chroma of the source backdrop above which an estimated light needs confirming
LIGHT_SHORTFALL = 0.08    # log-chroma of the backdrop's colour the piece's neutral parts do not share: over-correction
NET_SIZE = 384
SWEEP = CutoutParams()    # QA fits the source's backdrop as the cut-out does by default (tasks.cutout.fitted_sweep)
EDGE_SIGMAS = 4.0         # gradient across the outline, in noise sigmas, that is an edge in the photo


@dataclass
class Finding:
    code: str
    box: tuple[int, int, int, int]     # x0, y0, x1, y1 in source pixels
    text: str = ""

    def __post_init__(self) -> None:
        self.text = self.text or FINDING_TEXT[self.code]


@dataclass
class Evidence:
    metrics: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    overlay: np.ndarray | None = None   # (h, w) bool at QA's level: where the evidence disagrees with the result


def _largest_channel(x: np.ndarray) -> np.ndarray:
    """``x.max(2)`` of an (H, W, 3) array, the same values ~6x faster (numpy reduces a 3-long last
    axis element by element)."""
    return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).float().cpu().numpy()


def _sample(mask: np.ndarray, most: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of every k-th pixel of ``mask`` in row order, k so that about ``most`` are left:
    pixels are gathered, not the whole box copied first."""
    take = np.flatnonzero(mask.ravel())[:: max(1, int(mask.sum()) // most)]
    rows, cols = np.divmod(take, mask.shape[1])
    return torch.from_numpy(rows), torch.from_numpy(cols)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass
class _Blobs:
    """The components of a mask with at least ``min_px`` pixels, largest first, as labels and stats
    (a real photo can have thousands: no full-frame mask is made for each)."""
    labels: np.ndarray
    stats: np.ndarray
    ids: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, min_px: int) -> "_Blobs":
        _, labels, stats, _ = regions.parts(mask.astype(np.uint8))
        areas = stats[:, cv2.CC_STAT_AREA]
        ids = np.flatnonzero(areas >= min_px)
        ids = ids[ids > 0]
        return cls(labels, stats, ids[np.argsort(-areas[ids], kind="stable")])

    def area(self) -> int:
        return int(self.stats[self.ids, cv2.CC_STAT_AREA].sum())

    def box(self, k: int) -> tuple[int, int, int, int]:
        x, y, w, h = (int(v) for v in self.stats[k, :4])
        return x, y, x + w, y + h

    def mask(self, ids: np.ndarray | None = None) -> np.ndarray:
        keep = np.zeros(len(self.stats), bool)
        keep[self.ids if ids is None else ids] = True
        return keep[self.labels]

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` over each label."""
        return component_mean(self.labels, len(self.stats), values)


def _lab_mean(rgb: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(rgb.reshape(-1, 3).T[:, :, None]))[None].float()
    return rgb_to_lab(t)[0, :, :, 0].numpy().T


@dataclass
class Scene:
    """What QA reads from the whole frame: the backdrop (the clean plate, or a smooth surface fitted to
    the frame at the network's size) and the network's piece probability, both coarse or per pixel,
    and the frame's statistics: backdrop noise, the source's edge noise and the backdrop's colour.
    Everything per pixel is then looked at on the piece's box plus ``CROP_MARGIN`` only."""
    size: tuple[int, int]
    back_small: torch.Tensor | None     # (1, 3, h, w) sRGB surface; None with a plate
    used_small: torch.Tensor | None     # (1, 1, h, w) the pixels that surface was fitted on
    prob_small: torch.Tensor            # (1, 1, h, w) at NET_SIZE
    sigma: np.ndarray                   # (3,) backdrop noise, sRGB
    edge_noise: np.ndarray              # (3,) the source's 1 px high-pass noise on quiet backdrop
    backdrop_rgb: np.ndarray            # (3,) mean linear colour of the source's backdrop, away from the piece

    def backdrop(self, plate: torch.Tensor | None, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """(sRGB backdrop (h, w, 3), pixels it stands for (h, w)) on ``box``."""
        h, w = self.size
        if self.back_small is None:
            b = _hwc(linear_to_srgb(gaussian_blur(_padded(plate, box, PAD).clamp(0, 1), 1.0)))[PAD:-PAD, PAD:-PAD]
            return b, frame_border(h, w, plate.device, box)[0, 0].cpu().numpy()
        return (_hwc(resize_at(self.back_small, (h, w), *box).clamp(0, 1)),
                _hwc(resize_at(self.used_small, (h, w), *box))[..., 0] > 0.5)

    def prob(self, box: tuple[slice, slice]) -> np.ndarray:
        return _hwc(resize_at(self.prob_small, self.size, *box))[..., 0]


SAMPLE_GRID, SAMPLE_EDGE = 12, 64   # 12 x 12 windows of 64 px: 0.6 M pixels, 2.5% of 24 MP
PAD = 16                            # context around a window or box for its filters and dilations


def _padded(t: torch.Tensor, box: tuple[slice, slice], pad: int) -> torch.Tensor:
    """``t`` on ``box`` with ``pad`` px around it (replicated at the frame's edge)."""
    h, w = t.shape[-2:]
    y0, y1, x0, x1 = box[0].start - pad, box[0].stop + pad, box[1].start - pad, box[1].stop + pad
    inner = t[..., max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    return torch.nn.functional.pad(inner, (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h)), mode="replicate")


def _windows(h: int, w: int) -> list[tuple[slice, slice]]:
    """Where the frame's statistics are read: the whole frame, or on a large frame a grid of windows
    spread over it (medians and means of 0.6 M pixels move by far less than the thresholds' margins)."""
    if h * w <= SAMPLE_ABOVE or min(h, w) < SAMPLE_GRID * SAMPLE_EDGE:
        return [(slice(0, h), slice(0, w))]
    ys = np.linspace(0, h - SAMPLE_EDGE, SAMPLE_GRID).round().astype(int)
    xs = np.linspace(0, w - SAMPLE_EDGE, SAMPLE_GRID).round().astype(int)
    return [(slice(y, y + SAMPLE_EDGE), slice(x, x + SAMPLE_EDGE)) for y in ys for x in xs]


def read_scene(source: torch.Tensor, reference: Frame, alpha: torch.Tensor | None) -> Scene:
    """The frame-wide part of QA's evidence (see ``Scene``) for the cut-out ``alpha`` (None: no piece)."""
    from models.segnet import load_segnet, piece_probability

    image, plate = reference.image, reference.plate
    if alpha is None:
        alpha = torch.zeros_like(image[:, :1])
    h, w = image.shape[-2:]
    s = NET_SIZE / max(h, w)
    if s < 1:   # the network's and the fit's area-shrunk sRGB, a channel at a time: no full-size sRGB copy
        size = (max(1, round(h * s)), max(1, round(w * s)))
        enc = torch.cat([resize(linear_to_srgb(image[:, c:c + 1]), size) for c in range(image.shape[1])], 1)
    else:
        enc = linear_to_srgb(image)
    prob_small = piece_probability(enc, load_segnet(None, enc.device), size=NET_SIZE, coarse=True)
    back_small = used_small = None
    if plate is None:
        back_small, used_small = fitted_sweep(enc, SWEEP)[:2]
    scene = Scene((h, w), back_small, used_small, prob_small, np.zeros(3), np.zeros(3), np.zeros(3))
    diffs, highs, colours = [], [], []
    square = lambda n: np.ones((n, n), np.uint8)  # noqa: E731
    for box in _windows(h, w):
        b, used = scene.backdrop(plate, box)
        diffs.append((_hwc(linear_to_srgb(image[..., box[0], box[1]])) - b)[used])
        wide = grow(box, PAD, (h, w))
        inner = (slice(box[0].start - wide[0].start, box[0].stop - wide[0].start),
                 slice(box[1].start - wide[1].start, box[1].stop - wide[1].start))
        piece = (alpha[0, 0, wide[0], wide[1]] > 0.5).cpu().numpy().astype(np.uint8)
        src = _hwc(source[..., wide[0], wide[1]].clamp(0, 1))
        enc_src = linear_to_srgb(torch.from_numpy(src)).numpy()
        high = (enc_src - cv2.GaussianBlur(enc_src, (0, 0), 1.0))[inner]
        # quiet: backdrop the fit used, 4 px from the piece (as tasks.cutout.edge_strength reads its noise)
        highs.append(high[used & (cv2.dilate(piece, square(9))[inner] == 0)])
        # the backdrop's colour: 12 px from the piece (contact shadows, fringes left out)
        colours.append(src[inner][used & (cv2.dilate(piece, square(25))[inner] == 0)])
    del enc
    diff, high, colour = np.concatenate(diffs), np.concatenate(highs), np.concatenate(colours)
    scene.sigma = np.maximum(1.4826 * np.median(np.abs(diff), 0), 2.5e-3) if len(diff) > 64 else np.full(3, 0.01)
    scene.edge_noise = np.maximum(1.4826 * np.median(np.abs(high), 0), 1e-3) if len(high) > 64 else np.full(3, 0.01)
    scene.backdrop_rgb = colour.mean(0) if len(colour) > 64 else np.ones(3, np.float32)
    return scene


@dataclass
class _Backdrop:
    """The reference frame's backdrop on the piece's box and how each pixel departs from it."""
    plain: np.ndarray       # matches the unshaded backdrop (1.5 px average)
    explained: np.ndarray   # a grey shade of the backdrop explains its colour
    flat: np.ndarray        # no texture above noise (the piece's own edges not counted)
    shade: np.ndarray       # luminance ratio to the backdrop


BAND_ROWS = 256   # _backdrop works in bands of rows: its float temporaries are ~100 bytes a pixel
BAND_HALO = 16    # rows of context each band reads: the widest chain of filters reaches 12 px


def _backdrop(held: Held, piece: np.ndarray, box: tuple[slice, slice]) -> _Backdrop:
    """The held reference's backdrop on ``box``, band by band (each with ``BAND_HALO`` rows of context, so
    the result is the whole box's, pixel for pixel)."""
    rows, cols = box
    h = rows.stop - rows.start
    out = _Backdrop(*(np.empty(piece.shape, bool) for _ in range(3)), np.empty(piece.shape, np.float32))
    for own, read, keep in row_bands(h, BAND_ROWS, BAND_HALO):
        band_box = (slice(rows.start + read.start, rows.start + read.stop), cols)
        band = _backdrop_band(held.reference_on(band_box), piece[read], held.plate, held.scene, band_box)
        for name in ("plain", "explained", "flat", "shade"):
            getattr(out, name)[own] = getattr(band, name)[keep]
    return out


def _backdrop_band(image: torch.Tensor, piece: np.ndarray, plate: torch.Tensor | None, scene: Scene,
                   box: tuple[slice, slice]) -> _Backdrop:
    """``_backdrop`` on one band: ``image`` and ``piece`` on it, ``box`` where it lies in frame pixels."""
    e = _hwc(linear_to_srgb(image))
    b, _ = scene.backdrop(plate, box)
    diff, sigma = e - b, scene.sigma
    blur = lambda x, s_: cv2.GaussianBlur(x, (0, 0), s_)  # noqa: E731
    # tolerances in sRGB on a 1.5 px average: noise-scaled, floored by how well a smooth surface fits a sweep
    plain = _largest_channel(np.abs(blur(diff, 1.5)) / np.maximum(PLAIN_SIGMAS * SMOOTH_NOISE * sigma, FIT_FLOOR)) < 1
    lin_img, lin_back = _hwc(image.clamp(0, 1)), srgb_to_linear(torch.from_numpy(b)).numpy()
    wy = np.array(LUMINANCE, np.float32)
    shade = (lin_img @ wy) / np.maximum(lin_back @ wy, 1e-4)
    shaded = linear_to_srgb(torch.from_numpy(lin_back * np.clip(shade, 0, 1)[..., None])).numpy()
    explained = _largest_channel(np.abs(blur(e - shaded, 1.5))
                                 / np.maximum(EXPLAINED_SIGMAS * SMOOTH_NOISE * sigma, FIT_FLOOR)) < 1
    # texture of what is not piece: piece pixels read as the backdrop, so a hole's rim is no texture
    seen = np.where(piece[..., None], b, e)
    texture = _largest_channel(np.abs(seen - blur(seen, 2.0)) / sigma)
    flat = blur((texture > TEXTURE_SIGMAS).astype(np.float32), 1.0) < 0.25
    return _Backdrop(plain, explained, flat, shade)


def _enclosed(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The cut-out's holes (``tasks.regions.holes``: 4-connected, off the box's edge): labels, stats
    and their ids."""
    n, lab, stats = regions.holes(piece.astype(np.uint8))
    return lab, stats, list(range(1, n))


def _holes(piece: np.ndarray, holes: tuple, bd: _Backdrop, prob: np.ndarray
           ) -> tuple[float, list[Finding], np.ndarray]:
    """Holes of the cut-out whose core does not look like the backdrop seen through them."""
    area = max(int(piece.sum()), 1)
    lab, stats, ids = holes
    findings, bad, suspect = [], 0, np.zeros_like(piece)
    for k in ids:
        if stats[k, cv2.CC_STAT_AREA] < 25:
            continue
        x, y, w, h = stats[k, :4]
        # each hole looked at in its own box, 2 px wider than the erosion reaches
        win = (slice(max(0, y - 2), y + h + 2), slice(max(0, x - 2), x + w + 2))
        hole = lab[win] == k
        core = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0   # the mixed rim is the edge's
        if core.sum() < 10:
            continue
        backdrop_like = float((bd.explained[win] & bd.flat[win])[core].mean())
        if backdrop_like < HOLE_BACKDROP_SHARE or float(prob[win][core].mean()) > 0.5:
            bad += int(hole.sum())
            suspect[win] |= hole
            findings.append(Finding("hole_not_backdrop", (int(x), int(y), int(x + w), int(y + h))))
    return bad / area, findings, suspect


def _pierced(a: np.ndarray, holes: tuple) -> tuple[list[Finding], np.ndarray]:
    """Small holes in solid piece: the piece around a hole is over ``PIERCED_RATIO`` times as thick as
    the hole's own radius (holes of ``PIERCED_MIN_PX`` up to ``PIERCED_MAX_SHARE`` of the piece; larger
    ones are ``_holes``' business). ``a``: the alpha on the box; ``holes``: ``_enclosed(a > 0.5)``.

    A highlight or a stone's facet that matches the backdrop drops out of a cut-out as a small hole
    deep inside the metal or the stone; a hole of the design (a link's gap, an eyelet, openwork, a
    ring's interior) is ringed by wire or a band no thicker than itself. Geometry only: it holds where
    the facet or the highlight looks exactly like the backdrop, which the colour checks cannot tell.
    Then the same for see-through spots (alpha up to ``SEE_THROUGH``, most of them above 0.5) that are
    not such a hole's own soft rim: over a dark page they show as much.
    """
    found, where = [], np.zeros(a.shape, bool)
    h_box, w_box = a.shape
    padded = lambda t: np.pad(t.astype(np.uint8), 1)  # noqa: E731  (outside the window counts as backdrop)
    for level, given in ((0.5, holes), (SEE_THROUGH, None)):
        piece = a > level
        lab, stats, ids = given if given is not None else _enclosed(piece)
        largest = PIERCED_MAX_SHARE * piece.sum()
        for k in ids:
            x, y, w, h, area = (int(v) for v in stats[k])
            if not PIERCED_MIN_PX <= area <= largest:
                continue
            m = int((PIERCED_RATIO + 1) * max(w, h)) + 4      # far enough to see that much piece around it
            win = (slice(max(0, y - m), min(y + h + m, h_box)), slice(max(0, x - m), min(x + w + m, w_box)))
            hole = lab[win] == k
            if where[win][hole].any():       # a hole found at 0.5, with its soft rim
                continue
            radius = cv2.distanceTransform(padded(hole), cv2.DIST_L2, 3).max()
            depth = cv2.distanceTransform(padded(hole | piece[win]), cv2.DIST_L2, 3)[1:-1, 1:-1][hole].max()
            if depth - radius >= PIERCED_RATIO * radius:
                where[win] |= hole
                found.append((area, Finding("hole_in_piece", (x, y, x + w, y + h))))
    return [f for _, f in sorted(found, key=lambda t: -t[0])], where     # largest first


def _edge_support(source: torch.Tensor, piece: np.ndarray, noise: np.ndarray
                  ) -> tuple[float, list[Finding], np.ndarray]:
    """Share of the cut-out's outline with no edge under it in the source (before any stage).

    A piece ends in a step of colour; an outline that follows a shadow's fade, a polished face
    fading into the sweep it mirrors, or the hull of a chain cut as a band runs over smooth
    backdrop (``tasks.cutout.edge_strength``, in units of the frame's own ``noise``).
    """
    planes = (linear_to_srgb(source[:, c:c + 1])[0, 0].cpu().numpy() for c in range(source.shape[1]))
    strength = edge_strength(planes, None, noise)     # a plane at a time: no 3-channel copies of the source
    rim = outline(piece)
    weak = rim & (strength < EDGE_SIGMAS)
    share = float(weak.sum()) / max(int(rim.sum()), 1)
    runs = _Blobs.of(cv2.dilate(weak.astype(np.uint8), np.ones((5, 5), np.uint8)), 25)
    findings = [Finding("edge_unsupported", runs.box(k)) for k in runs.ids[:2]]
    return share, findings, cv2.dilate(weak.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def cast_unverified(source: torch.Tensor, alpha: torch.Tensor | None, scene: Scene, light_known: bool) -> bool:
    """``metrics['cast_unverified']`` as ``gather_evidence`` will give it, known right after the cut-out:
    the pipe then redoes neutralize and the cut-out with the colour as shot before anything else runs."""
    if light_known:
        return False
    alpha = alpha if alpha is not None else torch.zeros_like(source[:, :1])
    h, w = alpha.shape[-2:]
    box = grown_box(alpha, CROP_MARGIN) or (slice(0, h), slice(0, w))
    piece = alpha[0, 0, box[0], box[1]].float().cpu().numpy() > 0.5
    return _light_unconfirmed(_hwc(source[..., box[0], box[1]].clamp(0, 1)), piece, scene.backdrop_rgb)


def in_frame(evidence: Evidence, result: Frame, k: int) -> Evidence:
    """``evidence`` gathered at the pyramid level ``k`` (``qa.held.qa_level``; ``gather_evidence(...,
    pierced=False)``) on ``result``, the finished frame at full size: the findings' boxes in the frame's
    pixels (each grown to the whole blocks it covers), and the holes in solid piece found at full size.
    That test reads the alpha alone, and its smallest hole (9 px: 3 x 3 is seen at 1:1) is under a pixel
    of the level; so is the facet a cut-out at 24 MP leaves."""
    if k == 1:
        return evidence
    h, w = result.image.shape[-2:]
    findings = [Finding(f.code, (f.box[0] * k, f.box[1] * k, min(f.box[2] * k, w), min(f.box[3] * k, h)), f.text)
                for f in evidence.findings]
    metrics, overlay = dict(evidence.metrics), evidence.overlay.copy()
    box = None if result.alpha is None else grown_box(result.alpha, CROP_MARGIN)
    metrics["holes_in_piece"] = 0.0
    if box is not None:
        a = result.alpha[0, 0, box[0], box[1]].float().cpu().numpy()
        metrics["holes_in_piece"], shown, where = _holes_in_solid(a, _enclosed(a > 0.5), box)
        findings += shown
        ys, xs = np.nonzero(where)
        overlay[(ys + box[0].start) // k, (xs + box[1].start) // k] = True     # the blocks they lie in
    return Evidence(metrics, findings, overlay)


def _holes_in_solid(a: np.ndarray, holes: tuple, box: tuple[slice, slice]) -> tuple[float, list[Finding], np.ndarray]:
    """``_pierced`` on the alpha ``a`` of ``box``: how many, the three largest as findings in the pixels
    ``box`` lies in (where to look first), and where they are on the box."""
    found, where = _pierced(a, holes)
    oy, ox = box[0].start, box[1].start
    shown = [Finding(f.code, (f.box[0] + ox, f.box[1] + oy, f.box[2] + ox, f.box[3] + oy)) for f in found[:3]]
    return float(len(found)), shown, where


def gather_evidence(held: Held, result: Frame, *, light_known: bool, pierced: bool = True) -> Evidence:
    """Independent evidence for one image (B=1).

    ``held``: the source (as developed, before any stage) and the reference (after neutralize, before
    the cut-out) as QA holds them (``qa.held.hold``, with ``read_scene``'s scene); ``result``: the
    finished frame; ``light_known``: the shoot gave the light (kelvin or a plate), so it was not
    estimated from the backdrop; ``pierced=False``: holes in solid piece are left to ``in_frame`` (the
    frame read at a pyramid level: they are found at full size).

    The frame's statistics come from the whole frame (``read_scene``); everything else is looked at on
    the piece's box plus ``CROP_MARGIN`` (holes are enclosed by the piece, the outline and the parts
    are the piece's own; the widest filter reaches 9 px), a fraction of a 24 MP frame's pixels.
    """
    alpha = result.alpha if result.alpha is not None else torch.zeros_like(result.image[:, :1])
    h, w = alpha.shape[-2:]
    scene = held.scene
    if scene is None:
        raise ValueError("gather_evidence needs the frame's scene: hold(source, reference, alpha, read_scene(...))")
    box = grown_box(alpha, CROP_MARGIN) or (slice(0, h), slice(0, w))
    oy, ox = box[0].start, box[1].start
    shift = lambda b: (b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy)  # noqa: E731  box -> frame px
    on_box = lambda code, b: Finding(code, shift(b))  # noqa: E731
    a = alpha[0, 0, box[0], box[1]].float().cpu().numpy()
    piece = a > 0.5
    area = max(int(piece.sum()), 1)
    m: dict[str, float] = {}
    findings: list[Finding] = []
    near = np.zeros_like(piece)      # the overlay on the box
    bd = _backdrop(held, piece, box)
    prob = scene.prob(box)

    holes = _enclosed(piece)
    m["hole_suspect_area"], found, suspect = _holes(piece, holes, bd, prob)
    findings += [on_box(f.code, f.box) for f in found]
    near |= suspect
    if pierced:
        m["holes_in_piece"], shown, where = _holes_in_solid(a, holes, box)
        findings += shown
        near |= where

    # opaque pixels that are the plain, unshaded backdrop
    plain = (a > SEE_THROUGH) & bd.plain
    plain = cv2.morphologyEx(plain.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0
    blobs = _Blobs.of(plain, BACKDROP_BLOB_PX)     # many small gaps filled count together, as a customer sees them
    m["piece_backdrop_share"] = blobs.area() / area
    findings += [on_box("backdrop_in_piece", blobs.box(k)) for k in blobs.ids[:3]]
    near |= blobs.mask()

    # the second cut-out, compared at the network's resolution (finer than that it cannot see): both
    # area-averaged from full size (the probability as the stage's network_checks see it)
    sh, sw = scene.prob_small.shape[-2:]
    s = NET_SIZE / max(h, w)
    a_small = cv2.resize(alpha[0, 0].float().cpu().numpy(), (sw, sh), interpolation=cv2.INTER_AREA)
    p_small = cv2.resize(scene.prob((slice(0, h), slice(0, w))), (sw, sh), interpolation=cv2.INTER_AREA)
    disagree = _Blobs.of(np.abs(a_small - p_small) > 0.5, 4)
    m["cutout_disagreement"] = disagree.area() / max(float((a_small > 0.5).sum()), 1.0)
    for k in disagree.ids[:2]:
        x0, y0, x1, y1 = disagree.box(k)
        findings.append(Finding("cutout_disagree", (int(x0 / s), int(y0 / s), int(x1 / s) + 1, int(y1 / s) + 1)))
    disagreeing = cv2.resize(disagree.mask(disagree.ids[:2]).astype(np.uint8), (w, h),
                             interpolation=cv2.INTER_NEAREST) > 0

    m["edge_unsupported"], found, weak = _edge_support(held.source_on(box), piece, scene.edge_noise)
    findings += [on_box(f.code, f.box) for f in found]
    near |= weak

    # shadow and reflection slabs: flat grey darkenings of the backdrop the network calls background
    slab = piece & bd.explained & bd.flat & (bd.shade < 0.93) & (prob < 0.3)
    slabs = _Blobs.of(slab, max(25, int(0.003 * area)))
    m["shadow_slab_share"] = slabs.area() / area
    findings += [on_box("shadow_slab", slabs.box(k)) for k in slabs.ids[:2]]
    near |= slabs.mask()

    # parts apart from the piece must look like piece themselves
    parts = _Blobs.of(piece, 10)
    piece_like, backdrop_like = parts.mean(prob), parts.mean(bd.explained & bd.flat)
    stray = [k for k in parts.ids[1:] if piece_like[k] < 0.4 and backdrop_like[k] > 0.6]
    findings += [on_box("stray_part", parts.box(k)) for k in stray]
    near |= parts.mask(np.array(stray, int))
    m["stray_components"] = float(len(stray))
    overlay = disagreeing
    overlay[box] |= near

    m.update(_colour_evidence(held.source_on(box), held.reference_on(box), result.cropped(box), piece,
                              scene.backdrop_rgb, light_known))
    if m["cast_unverified"]:
        findings.append(Finding("cast_unverified", (0, 0, w, h)))
    if m["metal_implausible"]:
        findings.append(Finding("metal_implausible", shift(_box(piece)) if piece.any() else (0, 0, w, h)))
    return Evidence(m, findings, overlay)


def _log_chroma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.maximum(rgb, 1e-4)
    return np.array([np.log(rgb[0] / rgb[1]), np.log(rgb[2] / rgb[1])])


def _light_unconfirmed(src: np.ndarray, piece: np.ndarray, backdrop_rgb: np.ndarray) -> bool:
    """A coloured backdrop in the source is either coloured light on a white sweep or coloured paper.
    Light tints the whole piece, so its neutral parts (diamond facets, white-metal highlights) carry
    the backdrop's colour; paper tints nothing on the piece. The piece's bright, unclipped pixels
    that lie near the line from neutral (0) to the backdrop's colour (1) in log-chroma are its
    candidate neutral parts (gold and coloured stones lie off it); their median position says
    which it is. True when they sit nearer neutral; when they fall short of the backdrop by more
    than ``LIGHT_SHORTFALL`` (a beige desk or paper under warm light: the light tints the piece,
    the backdrop has its own colour besides, and correcting by all of it turns white metal teal);
    or when the piece has no neutral parts to confirm the light with (a plain gold piece on a
    coloured backdrop)."""
    bg = _log_chroma(backdrop_rgb)
    norm = float(bg @ bg)
    if np.sqrt(norm) < CAST_LOG_CHROMA:
        return False   # a near-neutral backdrop: the correction is small whatever it is
    y = src @ np.array(LUMINANCE, np.float32)
    # 3 px in from the outline: edge pixels mix with the backdrop and would carry its colour
    usable = (cv2.erode(piece.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & (_largest_channel(src) < 0.95) & (y > 0.05)
    if usable.sum() < 200:
        return True
    bright = np.maximum(src[usable & (y >= np.quantile(y[usable], 0.9))], 1e-4)
    lc = np.stack([np.log(bright[:, 0] / bright[:, 1]), np.log(bright[:, 2] / bright[:, 1])], 1)
    t = np.clip(lc @ bg / norm, -0.25, 1.25)
    off_line = np.hypot(*(lc - t[:, None] * bg).T)
    anchors = t[off_line < max(0.05, 0.25 * np.sqrt(norm))]
    if len(anchors) < max(30, 0.02 * len(t)):
        return True   # nothing neutral on the piece to confirm the light with: when unsure, a person looks
    at = float(np.median(anchors))     # where the neutral parts sit: 0 neutral, 1 the backdrop's colour
    return at < 0.5 or (1 - at) * np.sqrt(norm) > LIGHT_SHORTFALL


def _colour_evidence(source: torch.Tensor, reference: torch.Tensor, result: Frame, piece: np.ndarray,
                     backdrop_rgb: np.ndarray, light_known: bool) -> dict[str, float]:
    """On the piece's box: ``source``/``reference`` (1, 3, h, w), ``result`` cropped alike."""
    m: dict[str, float] = {}
    interior = cv2.erode(piece.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if interior.any():
        take = _sample(interior, 200_000)
        lab_s, lab_r = (rgb_to_lab(t[0][:, take[0], take[1]].clamp(0, 1)[None, :, :, None])
                        for t in (source, reference))
        m["neutralize_delta_e"] = float(delta_e2000(lab_s, lab_r).mean())
    else:
        m["neutralize_delta_e"] = 0.0
    lab_bg = _lab_mean(backdrop_rgb[None])
    m["source_backdrop_chroma"] = float(np.hypot(lab_bg[0, 1], lab_bg[0, 2]))
    # the same value cast_unverified() gave the pipe right after the cut-out
    m["cast_unverified"] = float(not light_known
                                 and _light_unconfirmed(_hwc(source.clamp(0, 1)), piece, backdrop_rgb))
    metal = result.masks.get("metal")
    where = interior & (metal[0, 0].float().cpu().numpy() > 0.5) if metal is not None else interior
    after = result.foreground if result.foreground is not None else result.image
    if where.sum() >= 50:
        take = _sample(where, 200_000)
        rgb = after[0][:, take[0], take[1]].clamp(0, 1).T.float().cpu().numpy()
        lab = _lab_mean(rgb)
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        hue = np.degrees(np.arctan2((np.sin(np.arctan2(lab[:, 2], lab[:, 1])) * chroma).sum(),
                                    (np.cos(np.arctan2(lab[:, 2], lab[:, 1])) * chroma).sum())) % 360
        m["metal_chroma"], m["metal_hue"] = float(np.median(chroma)), float(hue)
        m["metal_implausible"] = float(m["metal_chroma"] > 8 and not 25 <= hue <= 100)
    else:
        m["metal_chroma"], m["metal_hue"], m["metal_implausible"] = 0.0, 0.0, 0.0
    return m


def kept_findings(evidence: Evidence, rules) -> list[Finding]:
    """The findings whose metric breaks one of ``rules`` (objects with column/min/max): what the reviewer is
    shown. Findings under a metric no rule watches, or within bounds, are left out as noise."""
    def broken(column: str) -> bool:
        v = evidence.metrics.get(column)
        return v is not None and any(
            r.column == column and ((r.min is not None and v < r.min) or (r.max is not None and v > r.max))
            for r in rules)
    return [f for f in evidence.findings if broken(FINDING_METRIC[f.code])]
