"""The pixel pipe: stage order, one reason per entry, and the runner.

The registry of stages, the CLI's ``--skip`` choices and the preset's
``[stages.<name>]`` tables all come from ``STAGES`` below. ``develop`` runs
first and is not listed: it turns decoded pixels into a Frame.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import BaseModel

from tasks.background import BackgroundParams, replace_background
from tasks.compose import grown_box
from tasks.cutout import CutoutParams, cut_out
from tasks.dust import DustParams, remove_dust
from tasks.fill import FillParams, fill_defects
from tasks.frame import Frame
from tasks.gems import GemsParams, clarify_gems
from tasks.neutralize import NeutralizeParams, neutralize
from tasks.shine import ShineParams, add_shine


@dataclass(frozen=True)
class Stage:
    name: str
    params: type[BaseModel]
    apply: Callable[[Frame, BaseModel], Frame]
    why_here: str
    # how far from the piece the stage reads and writes, in px, for its parameters: it then runs on the
    # piece's box grown by that much, with the same result (its widest filter's 3 sigma and every mask
    # it grows fit inside); None: the whole frame
    reach: Callable[[BaseModel], int] | None = None
    # its parameters with their px sizes grown ``scale`` times, for a piece larger than PIECE_SIZE (``piece_scale``);
    # None: its px are the frame's whatever the piece's size
    scaled: Callable[[BaseModel, float], BaseModel] | None = None
    # its parameters when the background stage replaces the backdrop, so that its work there would show
    # in no export; None: the same parameters
    backdrop_replaced: Callable[[BaseModel], BaseModel] | None = None


# Stages' sizes in px (shine's light and clarity radii) hold for a piece up to this many px across, the
# simulator's scale (its pieces span 400-950 px of a 1200 x 800 frame); on a larger piece (a camera's full
# resolution) they grow with it, so the retouch works on the same part of the design at any resolution.
PIECE_SIZE = 1000


def piece_scale(piece: torch.Tensor) -> float:
    """How many times larger than ``PIECE_SIZE`` the piece's box is across (its longer side), at least 1."""
    box = grown_box(piece, 0, threshold=0.5)
    if box is None:
        return 1.0
    return max(1.0, max(box[0].stop - box[0].start, box[1].stop - box[1].start) / PIECE_SIZE)


STAGES: tuple[Stage, ...] = (
    Stage("neutralize", NeutralizeParams, neutralize,
          "first: every later decision (backdrop model, metal hue, stone colour) needs true colour"),
    Stage("cutout", CutoutParams, cut_out,
          "before retouch: dust, shine and gems need to know what is piece and what is backdrop"),
    Stage("dust", DustParams, remove_dust,
          "before shine/gems: local contrast would make specks more visible and harder to fill",
          backdrop_replaced=lambda p: p.model_copy(update={"backdrop": False})),
    Stage("fill", FillParams, fill_defects,
          "right after dust: regenerates the defects too large for its classical fill, before contrast stages"),
    Stage("shine", ShineParams, add_shine,
          "on clean metal, before gems, so stone masks see final metal tones",
          reach=lambda p: 3 * math.ceil(max(p.light_radius, p.radius)) + 8,
          scaled=lambda p, s: p.model_copy(update={"light_radius": p.light_radius * s, "radius": p.radius * s})),
    Stage("gems", GemsParams, clarify_gems,
          "after shine: stone contrast is judged against the finished metal", reach=lambda p: 16),
    Stage("background", BackgroundParams, replace_background,
          "last: compositing onto white/transparent needs the final piece colours and alpha"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
# Codes a stage may raise (Frame.flagged) instead of failing; QA maps each to a reason.
FLAG_CODES = ("mask_suspect", "cast_uncertain")


def stage_params(overrides: dict[str, dict], background: dict | None = None) -> dict[str, BaseModel]:
    """Validated parameters for every stage from preset overrides."""
    unknown = set(overrides) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGE_NAMES)}")
    params = {}
    for stage in STAGES:
        values = dict(overrides.get(stage.name, {}))
        if stage.name == "background" and background:
            values = {**background, **values}
        params[stage.name] = stage.params.model_validate(values)
    return params


def run_stages(frame: Frame, params: dict[str, BaseModel], skip: tuple[str, ...] = (), *,
               want_reference: bool = True) -> tuple[Frame, Frame | None, dict[str, float]]:
    """Run every stage in order.

    Returns the final frame, the frame right after ``neutralize`` (QA's
    reference: colour drift is measured against corrected colour, not the
    cast; the input frame when neutralize is skipped) and seconds per stage.
    ``want_reference=False``: None instead, and the input frame is not held
    once the first stage has replaced it (a 24 MP frame is ~0.3 GB).
    """
    timings = {}
    reference = frame if want_reference else None
    # whole-frame layers this run made (pasted copies, a whole-frame stage's new planes), which nothing
    # outside it holds, so a later stage's part is pasted into them in place (weakly: one a later stage
    # replaces whole goes when its frame does); never the caller's or the reference's memory
    made: list[weakref.ref] = []
    theirs = _storages(frame)
    for stage in STAGES:
        if stage.name in skip:
            continue
        t0 = time.perf_counter()
        piece = frame.masks.get("piece")
        given = params[stage.name]
        if stage.scaled is not None and piece is not None:
            given = stage.scaled(given, piece_scale(piece))
        if stage.backdrop_replaced is not None and "background" not in skip:
            given = stage.backdrop_replaced(given)
        if stage.reach is None or piece is None:
            frame = stage.apply(frame, given)
            made += [weakref.ref(t) for t in _layers(frame)
                     if _storage(t) not in theirs and not any(t is r() for r in made)]
        else:
            frame = _near_piece(stage.apply, frame, given, piece, stage.reach(given), made)
        timings[stage.name] = time.perf_counter() - t0
        if stage.name == "neutralize" and want_reference:
            reference = frame
            made.clear()        # the reference is handed out: its layers are no longer this run's alone
            theirs |= _storages(reference)
    return frame, reference, timings


def _layers(frame: Frame) -> list[torch.Tensor]:
    """The frame's layers a stage may hand back changed (the plate never is)."""
    return [t for t in (frame.image, frame.alpha, frame.foreground, *frame.masks.values()) if t is not None]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _storages(frame: Frame) -> set[int]:
    """Where the frame's layers live: memory a run must never write into (a view of it shares it)."""
    return {_storage(t) for t in _layers(frame)} | ({_storage(frame.plate)} if frame.plate is not None else set())


def _near_piece(apply: Callable[[Frame, BaseModel], Frame], frame: Frame, params: BaseModel, piece: torch.Tensor,
                reach: int, made: list[weakref.ref] | None = None) -> Frame:
    """``apply`` on the piece's box grown by ``reach`` px, its tensors pasted back into the whole frame.

    A layer is pasted into a copy of the whole frame's, which the caller (and QA's reference) may still
    hold; ``made`` lists the whole-frame layers the run that calls this made so far (such copies, a
    whole-frame stage's new layers): those only the run holds, and a later stage's part is pasted into
    them in place (a 24 MP image's copy is 0.29 GB: shine's part goes into dust's new image, gems' into
    that too)."""
    box = grown_box(piece, reach, threshold=0.0)
    h, w = piece.shape[-2:]
    if box is None or (box[0].stop - box[0].start) * (box[1].stop - box[1].start) > 0.8 * h * w:
        return apply(frame, params)          # no piece, or barely smaller: not worth the copies

    cropped = frame.cropped(box)
    done = apply(cropped, params)

    def paste(whole, part, given):
        if part is given:        # handed back untouched (or absent): the whole frame's layer, uncopied
            return whole
        if part is None:         # dropped by the stage
            return None
        if whole is not None and made is not None and any(whole is r() for r in made) \
                and _storage(part) != _storage(whole):
            whole[..., box[0], box[1]] = part
            return whole
        out = part.new_zeros((*part.shape[:-2], h, w)) if whole is None else whole.clone()
        out[..., box[0], box[1]] = part
        if made is not None:
            made.append(weakref.ref(out))
        return out

    return done.replace(image=paste(frame.image, done.image, cropped.image),
                        alpha=paste(frame.alpha, done.alpha, cropped.alpha),
                        foreground=paste(frame.foreground, done.foreground, cropped.foreground), plate=frame.plate,
                        masks={k: paste(frame.masks.get(k), v, cropped.masks.get(k)) for k, v in done.masks.items()})
