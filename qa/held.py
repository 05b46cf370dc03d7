"""What QA holds of a frame from the cut-out until it has measured the result.

QA compares the result with the source (as developed) and with the reference (after neutralize);
at 24 MP each is 0.29 GB, held through the later stages (shine, gems, dust, background) and QA.
QA reads them whole only for a few frame-wide statistics: the scene (``qa.evidence.read_scene``)
and the reference backdrop's cast. Those are read first; then both frames are held on the
piece's box plus ``CROP_MARGIN`` (where every other read of QA's lies) and the whole frames can
go: a pave ring's box is ~40% of its frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tasks.color import rgb_to_lab
from tasks.compose import grown_box
from tasks.frame import Frame
from tasks.ops import SAMPLE_ABOVE, dilate

if TYPE_CHECKING:
    from qa.evidence import Scene

# the piece's box is grown by this much for what is measured on the piece and around it
CROP_MARGIN = 64
# the box holds every pixel with alpha above this: the metrics' box (the evidence's, at alpha 0.5, lies inside)
BOX_ALPHA = 0.02
# backdrop pixels this far from the piece are read for the residual cast (contact shadows, fringes excluded)
BACKDROP_MARGIN = 12


def qa_level(size: tuple[int, int], work_size: int | None) -> int:
    """The pyramid level (``tasks.ops.shrunk_by``) QA reads a frame of ``size`` at: the largest whole k that
    keeps its long edge at ``work_size`` px or more, the size the cut-out decides at (``[stages.cutout]
    work_size``), so QA never reads coarser than the cut-out decided: 1 (the frame itself) under twice
    that, 2 for a 24 MP back's 6000 px. Its per-pixel tests (an outline's 1 px gradient, a backdrop's
    1.5 px average) were made on 1-2 MP frames, and at 24 MP each cost four times the pixels. The fringe,
    the outline's share and holes in solid piece, a few of the frame's own px, are still read at full size
    (``qa.metrics.at_full_size``, ``qa.evidence.in_frame``)."""
    return 1 if work_size is None else max(1, max(size) // work_size)


def qa_box(alpha: torch.Tensor | None, size: tuple[int, int]) -> tuple[slice, slice]:
    """The piece's box (alpha > ``BOX_ALPHA``) grown by ``CROP_MARGIN``; the whole frame without a piece."""
    box = grown_box(alpha, CROP_MARGIN, threshold=BOX_ALPHA) if alpha is not None else None
    return box or (slice(0, size[0]), slice(0, size[1]))


def backdrop_cast(image: torch.Tensor, alpha: torch.Tensor, margin: int = BACKDROP_MARGIN) -> tuple[float, float]:
    """Mean CIELAB (a*, b*) of ``image``'s backdrop: alpha < 0.01 and > ``margin`` px from alpha > 0.5.

    On the neutralized input this is the cast neutralize left in (a neutral sweep
    reads (0, 0) at any brightness). Returns (nan, nan) when there is no backdrop.
    """
    # a mean over a smooth backdrop: above SAMPLE_ABOVE pixels an even grid of them gives it (24 MP: every
    # 3rd row and column), read without gathering the whole backdrop
    h, w = alpha.shape[-2:]
    step = math.ceil(math.sqrt(h * w / SAMPLE_ABOVE)) if h * w > SAMPLE_ABOVE else 1
    # within ``margin`` of the piece: dilated on the piece's box grown by the margin, the only place it reaches
    near = torch.zeros((h, w), dtype=torch.bool, device=alpha.device)
    box = grown_box(alpha, margin, threshold=0.5)
    if box is not None:
        near[box] = dilate((alpha[..., box[0], box[1]] > 0.5).to(alpha.dtype), margin)[0, 0] >= 0.5
    far = (alpha[0, 0, ::step, ::step] < 0.01) & ~near[::step, ::step]
    if not bool(far.any()):
        return float("nan"), float("nan")
    pixels = image[0][:, ::step, ::step][:, far]
    lab = rgb_to_lab(pixels[None, :, :, None])
    return float(lab[:, 1].mean()), float(lab[:, 2].mean())


@dataclass(frozen=True)
class Held:
    """The source and the reference on ``box`` (px of the frame as QA reads it: at its level, ``qa_level``),
    with what QA read of them whole.

    ``source`` is None where only the metrics are wanted; ``scene`` None where the evidence is not.
    The reference's clean plate stays whole: the result carries it too until the exports.
    """
    source: torch.Tensor | None       # (1, 3, h, w) linear RGB as developed, on box
    reference: torch.Tensor           # (1, 3, h, w) after neutralize, on box
    plate: torch.Tensor | None        # (1, 3, H, W) the reference's clean plate, whole
    box: tuple[slice, slice]
    size: tuple[int, int]             # the frame's (H, W) as QA reads it
    cast: tuple[float, float]         # ``backdrop_cast`` of the whole reference
    scene: Scene | None = None

    def source_on(self, box: tuple[slice, slice]) -> torch.Tensor:
        return self.source[..., self._inside(box, 0), self._inside(box, 1)]

    def reference_on(self, box: tuple[slice, slice]) -> torch.Tensor:
        return self.reference[..., self._inside(box, 0), self._inside(box, 1)]

    def _inside(self, box: tuple[slice, slice], axis: int) -> slice:
        """``box``'s rows (axis 0) or columns (1) in the held box's own pixels; a read outside it is a bug."""
        want, have = box[axis], self.box[axis]
        if want.start < have.start or want.stop > have.stop:
            raise ValueError(f"QA reads {box} outside the held box {self.box}: did a stage grow the matte?")
        return slice(want.start - have.start, want.stop - have.start)


def hold(source: torch.Tensor | None, reference: Frame, alpha: torch.Tensor | None,
         scene: Scene | None = None) -> Held:
    """Read the frame-wide statistics of ``reference`` for the cut-out ``alpha``, then hold ``source`` and
    ``reference`` on ``qa_box(alpha)`` only (copies: the whole frames can go)."""
    size = tuple(reference.image.shape[-2:])
    cast = backdrop_cast(reference.image, alpha if alpha is not None else torch.zeros_like(reference.image[:, :1]))
    box = qa_box(alpha, size)

    if box == (slice(0, size[0]), slice(0, size[1])):
        return Held(source, reference.image, reference.plate, box, size, cast, scene)
    # copies (a view would keep the whole frame alive), both in one block: they live through the later
    # stages and QA, and at 24 MP one block is over the actor's mapping threshold (infra.limits.MAP_ABOVE),
    # so it gets pages of its own instead of pinning the middle of the heap
    layers = [t for t in (source, reference.image) if t is not None]
    block = torch.stack([t[0, :, box[0], box[1]] for t in layers])
    held = list(block[:, None].unbind(0))
    return Held(held[0] if source is not None else None, held[-1], reference.plate, box, size, cast, scene)


def as_held(reference: Frame | Held, alpha: torch.Tensor | None) -> Held:
    """``reference`` as QA holds it for the cut-out ``alpha``: already held, or a whole frame held now
    (no source: for the metrics, which compare the result with the reference only)."""
    return reference if isinstance(reference, Held) else hold(None, reference, alpha)
