"""One image, start to finish: read, develop, stages, metrics, staged exports.

This is the body of a Ray task. It imports neither Ray nor Prefect, so it
can be called directly (tests, debugging) and the same code runs on CPU or
CUDA. Exports are rendered now and staged next to the output; the flow
publishes them after QA passes, or a reviewer's approval does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pydantic import ValidationError

from infra.failpoints import failpoint
from infra.imageio import TooLarge, UnreadableSource, encode, read_source
from infra.limits import memory_cap, peak_rss_mb, reuse_freed_memory
from infra.presets import ExportSpec, Preset, PresetError, load_preset
from infra.storage import Location
from qa.evidence import Evidence, cast_unverified, gather_evidence, in_frame, kept_findings, read_scene
from qa.held import Held, hold, qa_level
from qa.metrics import compute_metrics, detail_loss_map
from tasks.color import srgb8_to_linear
from tasks.compose import canvas_scale, on_canvas, piece_box, quantize
from tasks.cutout import matte_onto
from tasks.develop import DevelopParams, develop
from tasks.frame import Frame
from tasks.neutralize import card_light
from tasks.ops import shrunk_by
from tasks.pipeline import STAGE_NAMES, STAGES, stage_params, run_stages
from tasks.sensor_dust import SensorDustParams, Spot, SurveyFound, correct_sensor_dust, dust_evidence, spots_for

PREVIEW_EDGE = 1200
TASK_BASE_BYTES = 1536 << 20       # see task_memory
TASK_BYTES_PER_PIXEL = 400
# ``[stages.<name>]`` tables that are not pixel-pipe stages: develop runs before the pipe,
# sensor_dust is measured over the whole shoot and applied right after develop
SHOOT_LEVEL = ("develop", "sensor_dust")


def stage_problems(stages: dict, where: str) -> list[str]:
    """One line per unknown stage or bad parameter in a ``[stages]`` table (``where`` names the file)."""
    models = {"develop": DevelopParams, "sensor_dust": SensorDustParams, **{s.name: s.params for s in STAGES}}
    problems = []
    for name, values in stages.items():
        if name not in models:
            problems.append(f"{where}: unknown stage [stages.{name}] (stages: {', '.join(models)})")
            continue
        try:
            models[name].model_validate(values)
        except ValidationError as exc:
            problems += [f"{where}: stages.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return problems


def checked_preset(name_or_path: str | Path) -> Preset:
    """A preset whose stage tables are checked against the stages' own parameter models."""
    preset = load_preset(name_or_path)
    problems = stage_problems(preset.stages, f"preset {name_or_path}")
    if problems:
        raise PresetError("\n".join(problems))
    return preset


@dataclass
class Outcome:
    """What the flow needs to know about one image (small, picklable)."""

    image_id: str
    ok: bool
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)   # seconds: decode, develop, each stage, qa, encodes
    seconds: float = 0.0
    staged: dict[str, Location] = field(default_factory=dict)   # export name -> staged file
    size: tuple[int, int] = (0, 0)
    node: str = ""                                          # the Ray node it ran on (set by the flow)


def export_name(spec: ExportSpec) -> str:
    ext = {"jpeg": "jpg", "png": "png", "tiff": "tif", "webp": "webp"}[spec.format]
    return f"{spec.name}.{ext}"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def retouch_image(source: Location | Path, image_id: str, preset: Preset, staging: Location | Path, *,
                  device: str = "auto", overrides: dict | None = None,
                  sensor_dust: SurveyFound | None = None, plate: Location | None = None) -> Outcome:
    """Process one source file (read, and staged files written, through ``infra.storage``: a folder
    or an S3 prefix); never raises for a bad file (returns ok=False).

    ``sensor_dust``: the shoot's sensor-dust spots by evidence-map shape (the flow's survey of
    the shoot); those of this frame's shape are divided out right after ``develop``, before
    every stage. ``plate``: the shoot's clean plate (a frame of the empty backdrop), developed
    alike and handed to the stages.
    """
    t0, started_at = time.perf_counter(), time.time()
    failpoint("worker.start")
    source, staging = Location.of(source), Location.of(staging)
    try:
        decoded = _read(source)   # bounded: the pixel budget is checked from the header
        decoded_at = time.perf_counter()
    except TooLarge as exc:
        return Outcome(image_id, ok=False, error=f"too_large: {exc}", seconds=time.perf_counter() - t0)
    except UnreadableSource as exc:
        return Outcome(image_id, ok=False, error=f"unreadable: {exc}", seconds=time.perf_counter() - t0)
    dev = resolve_device(device)
    # (CUDA's driver maps large private regions; GPU memory is torch's to bound)
    cap = memory_cap(task_memory(*decoded.pixels.shape[:2])) if dev.type == "cpu" else contextlib.nullcontext()
    handed = [decoded]   # handed over: _retouch drops the decoded array once it is developed (288 MB at 24 MP)
    del decoded
    with cap:
        outcome = _retouch(handed, image_id, preset, staging, dev, overrides, sensor_dust, plate)
    outcome.seconds = time.perf_counter() - t0
    outcome.timings["decode"] = decoded_at - t0
    outcome.metrics["worker_peak_mb"] = round(peak_rss_mb(), 1)
    outcome.metrics["started_at"] = round(started_at, 3)
    return outcome


def _read(source: Location, **kwargs):
    with source.local_file() as path:   # an S3 object is fetched to a temporary file first
        return read_source(path, **kwargs)


def task_memory(height: int, width: int) -> int:
    """What one image may add to its worker's memory: measured ~250 bytes per source pixel at 24 MP
    (issue 13's profile), with headroom, plus a fixed part for the networks' activations and codecs."""
    return TASK_BASE_BYTES + TASK_BYTES_PER_PIXEL * height * width


def _retouch(handed: list, image_id: str, preset: Preset, staging: Location, dev: torch.device, overrides: dict | None,
             sensor_dust: SurveyFound | None, plate: Location | None) -> Outcome:
    decoded = handed.pop()
    pixels = torch.from_numpy(decoded.pixels).permute(2, 0, 1)[None].to(dev)
    size = (pixels.shape[-1], pixels.shape[-2])
    overrides = overrides or {}
    stages = {**preset.stages, **overrides.get("stages", {})}
    skip = tuple(preset.skip) + tuple(overrides.get("skip", ()))
    background = {"mode": preset.background, "color": preset.background_color, "shadow": preset.shadow}
    with torch.inference_mode():
        t0 = time.perf_counter()
        frame = develop(pixels, decoded.transfer, DevelopParams(**stages.get("develop", {})))
        del pixels, decoded      # develop made its own copy
        developed = time.perf_counter() - t0
        dust_params = SensorDustParams(**stages.get("sensor_dust", {}))
        spots = spots_for(sensor_dust or {}, *frame.image.shape[-2:], dust_params) if dust_params.enabled else []
        frame = correct_sensor_dust(frame, spots)
        if plate is not None:
            frame = _with_plate(frame, plate, stages, spots, dev)
        params = stage_params({k: v for k, v in stages.items() if k not in SHOOT_LEVEL}, background)
        handed_on = [frame]     # QA reads the source last, inside: nothing here holds it afterwards
        del frame
        result, held, seen, before, timings, metrics, evidence = _stages_and_evidence(handed_on, params, skip)
        metrics["sensor_dust_spots"] = float(len(spots))
        metrics["upscale"] = _upscale(result, preset)
        t0 = time.perf_counter()
        _stage_previews(before, held, result, seen, staging, evidence, preset)
        # the exports need the result's pixels and alpha alone: what QA held, the plate (~0.3 GB at 24 MP)
        # and the masks (0.1 GB each) go before they are encoded
        del held, seen
        result = result.replace(plate=None, masks={})
        t1 = time.perf_counter()
        staged = _stage_exports(result, preset, staging)
        failpoint("worker.staged")
        timings.update(develop=developed, previews=timings.get("previews", 0.0) + t1 - t0,
                       exports=time.perf_counter() - t1)
    return Outcome(image_id, ok=True, metrics=metrics, flags=result.flags, notes=result.notes, timings=timings,
                   staged=staged, size=size)


# the stages up to the cut-out, after which QA can tell whether an estimated light is confirmed
TO_CUTOUT = STAGE_NAMES[:STAGE_NAMES.index("cutout") + 1]


def _stages_and_evidence(handed: list[Frame], params: dict, skip: tuple[str, ...]):
    """The pixel pipe on the frame ``handed`` over, then the metrics and QA's own evidence on its result.

    When the light was estimated from a coloured backdrop and nothing on the piece confirms it
    (``qa.evidence.cast_unverified``, known once the piece is cut out), neutralize is redone with the
    colour left as shot and the cut-out carried onto it (``tasks.cutout.matte_onto``; QA holds the
    image either way; nothing is redone where neutralize left the colour as shot already, on a desk):
    never "corrected" wrongly, and the later stages run once. Once the piece is cut out, what QA and
    the previews read of the whole source and reference is read, and QA holds the two on the piece's
    box only (``qa.held.hold``) while the later stages run. QA reads every frame at its level
    (``qa.held.qa_level``: a 24 MP frame at half its size), its findings' boxes given in frame pixels.

    Returns the result, what QA held, the result at QA's level, the "before" preview, seconds per step,
    the metrics and the evidence."""
    frame = handed.pop()
    light_known = params["neutralize"].kelvin is not None
    later = tuple(n for n in STAGE_NAMES if n not in TO_CUTOUT)
    reference, _, timings = run_stages(frame, params, skip + later + ("cutout",))
    cut, _, rest = run_stages(reference, params, skip + later + ("neutralize",), want_reference=False)
    timings.update(rest)
    k = qa_level(tuple(frame.image.shape[-2:]), params["cutout"].work_size)
    t0 = time.perf_counter()
    # what QA reads, at its level: the source, the reference and the cut-out (matte_onto below keeps it)
    source, seen_reference = shrunk_by(frame.image, k), reference.shrunk_by(k)
    alpha = None if cut.alpha is None else shrunk_by(cut.alpha, k)
    scene = read_scene(source, seen_reference, alpha)
    scene_seconds = time.perf_counter() - t0
    estimated = "neutralize" not in skip and params["neutralize"].strength > 0
    unconfirmed = estimated and cast_unverified(source, alpha, scene, light_known)
    # (neutralize may have left the colour as shot already, on a textured backdrop: nothing to redo)
    if unconfirmed and reference.image is not frame.image:
        params = {**params, "neutralize": params["neutralize"].model_copy(update={"strength": 0.0})}
        made = dict(alpha=cut.alpha, masks=cut.masks, flags=cut.flags[len(reference.flags):],
                    notes=cut.notes[len(reference.notes):])
        del cut, reference, seen_reference, scene     # the first pass's frames (~0.6 GB at 24 MP) go first
        reference, _, again = run_stages(frame, params, skip + later + ("cutout",))
        t0 = time.perf_counter()
        cut = matte_onto(reference, **made)
        del made
        timings.update(neutralize=timings["neutralize"] + again["neutralize"],
                       cutout=timings.get("cutout", 0.0) + time.perf_counter() - t0)
        t0 = time.perf_counter()
        seen_reference = reference.shrunk_by(k)
        scene = read_scene(source, seen_reference, alpha)
        scene_seconds += time.perf_counter() - t0
    if unconfirmed:
        cut = cut.noted("neutralize: the light could not be confirmed on the piece; colour left as shot")
    before, timings["previews"] = _timed(_preview, reference.image, _preview_size(*reference.image.shape[-2:]))
    held, seconds = _timed(hold, source, seen_reference, alpha, scene)
    scene_seconds += seconds
    # the later stages are handed the cut-out frame alone: nothing here holds it, the source or the
    # reference whole while they run
    handed_on = [cut]
    del cut, frame, reference, source, seen_reference, alpha
    result, _, rest = run_stages(handed_on.pop(), params, skip + TO_CUTOUT, want_reference=False)
    timings.update(rest)
    t0 = time.perf_counter()
    seen = result.replace(plate=None).shrunk_by(k)     # (QA reads the plate it holds, not the result's)
    # a fringe and the outline are a few of the frame's own px: the level would misread them
    metrics = compute_metrics(held, seen, full=result if k > 1 else None)
    if light_known:   # the backdrop keeps its own colour (coloured paper): it is no residual cast
        metrics.update(background_a=0.0, background_b=0.0, background_cast=0.0)
    t1 = time.perf_counter()
    evidence = in_frame(gather_evidence(held, seen, light_known=light_known, pierced=k == 1), result, k)
    metrics.update(evidence.metrics)
    timings.update(qa_metrics=t1 - t0, qa_evidence=time.perf_counter() - t1 + scene_seconds)
    return result, held, seen, before, timings, metrics, evidence


def _timed(f, *args):
    t0 = time.perf_counter()
    return f(*args), time.perf_counter() - t0


def _with_plate(frame: Frame, plate: Location, stages: dict, spots: list[Spot], dev: torch.device) -> Frame:
    """``frame`` with the shoot's clean plate developed like the image (same size and orientation
    required; otherwise the image goes on without it, with a note)."""
    try:
        decoded = _read(Location.of(plate))
    except UnreadableSource as exc:
        return frame.noted(f"plate: {plate.name} unreadable ({exc}); backdrop fitted instead")
    pixels = torch.from_numpy(decoded.pixels).permute(2, 0, 1)[None].to(dev)
    if pixels.shape[-2:] != frame.image.shape[-2:]:
        return frame.noted(f"plate: {plate.name} is {pixels.shape[-1]}x{pixels.shape[-2]}, the image "
                           f"{frame.image.shape[-1]}x{frame.image.shape[-2]}; backdrop fitted instead")
    developed = correct_sensor_dust(develop(pixels, decoded.transfer, DevelopParams(**stages.get("develop", {}))), spots)
    return frame.replace(plate=developed.image).noted(f"plate: backdrop from {plate.name}")


def read_card(card: Location, develop_params: dict) -> tuple[int, float]:
    """The light (kelvin, tint) off a shoot's grey-card frame, decoded at half size (the light needs no
    detail: a 24 MP RAW's card 0.4 s) and developed as the shoot's images are. Raises
    ``UnreadableSource`` (the file) or ``tasks.neutralize.NotACard`` (what it shows)."""
    decoded = _read(Location.of(card), half_size=True)
    pixels = torch.from_numpy(np.ascontiguousarray(decoded.pixels)).permute(2, 0, 1)[None]
    return card_light(develop(pixels, decoded.transfer, DevelopParams(**develop_params)).image)


def sensor_dust_evidence(source: Location, params: SensorDustParams) -> np.ndarray | None:
    """One frame's sensor-dust evidence map (``tasks.sensor_dust.dust_evidence``), from a
    reduced decode (a RAW's luminance at half size, straight from its mosaic where it can; a JPEG
    by its DCT scaling); None for a file that cannot be read."""
    source = Location.of(source)
    try:
        decoded = _read(source, half_size=True, grey=True)
        if max(decoded.pixels.shape[:2]) < 0.75 * params.working_edge and decoded.reduced:
            decoded = _read(source)   # a small frame: whole, so its map is not made from fewer pixels than it has
    except UnreadableSource:
        return None
    pixels = torch.from_numpy(decoded.pixels).permute(2, 0, 1)[None]
    with torch.inference_mode():
        # a grey decode is linear luminance in [0, 1] already: the map's own input
        image = pixels if pixels.shape[1] == 1 else develop(pixels, decoded.transfer, DevelopParams()).image
        return dust_evidence(image, params)[0, 0].cpu().numpy()


def canvas_edge(box: tuple[int, int, int, int], spec: ExportSpec, preset: Preset) -> int:
    """A canvas export's edge in px for a piece in ``box`` (``piece_box``): the spec's, or with
    ``small_sources = "own_size"`` less, so the piece is never enlarged past its source pixels (a 208 px
    photo is not blown up to 2400 px)."""
    edge = spec.long_edge or 2400
    if preset.small_sources == "own_size":
        scale = canvas_scale(box, edge, spec.margin)
        if scale > 1:
            edge = max(64, int(edge / scale))
    return edge


def _upscale(frame: Frame, preset: Preset) -> float:
    """Largest enlargement of the source's pixels among the preset's canvas exports (0 without any)."""
    if frame.alpha is None:
        return 0.0
    box = piece_box(frame.alpha)
    return max((canvas_scale(box, canvas_edge(box, spec, preset), spec.margin)
                for spec in preset.exports if spec.grid != "source"), default=0.0)


def export_pixels(frame: Frame, preset: Preset) -> Iterator[tuple[ExportSpec, np.ndarray]]:
    """Each of the preset's exports as the codes its encoder takes: (spec, uint8/uint16 (H, W, 3|4)),
    one at a time (a 24 MP export is 0.1-0.2 GB)."""
    alpha = frame.alpha if frame.alpha is not None else torch.ones_like(frame.image[:, :1])
    colour = frame.foreground if frame.foreground is not None else frame.image
    backdrop = srgb8_to_linear(preset.background_color if preset.background == "color" else (255, 255, 255),
                               frame.image)
    box = piece_box(alpha)      # once: every canvas export crops the same piece
    for spec in preset.exports:
        if spec.grid == "source":
            image, a = (colour, alpha) if spec.alpha else (frame.image, None)
        else:
            image, a = on_canvas(colour, alpha, canvas_edge(box, spec, preset), spec.margin, backdrop, box,
                                 transparent=spec.alpha)
        yield spec, quantize(image, a, spec.bits)


def _stage_exports(frame: Frame, preset: Preset, staging: Location) -> dict[str, Location]:
    staged = {}
    for spec, pixels in export_pixels(frame, preset):
        data = encode(pixels, spec.format, quality=spec.quality, level=spec.level, compression=spec.compression)
        staged[spec.name] = staging / export_name(spec)
        staged[spec.name].write_bytes(data)
    return staged


def _preview_size(h: int, w: int) -> tuple[int, int]:
    scale = min(1.0, PREVIEW_EDGE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _preview(image: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """``image`` shrunk to ``size`` in linear light (as the canvas exports are) before it is quantized:
    the full frame is never encoded for a 1200 px preview."""
    if tuple(image.shape[-2:]) != size:     # a channel at a time: the clamped copy is one plane, not the frame
        image = torch.cat([F.interpolate(image[:, c:c + 1].clamp(0, 1), size=size, mode="bilinear",
                                         align_corners=False, antialias=True) for c in range(image.shape[1])], 1)
    return Image.fromarray(quantize(image, None, 8))


def _shrunk(plane: torch.Tensor | np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """A (H, W) layer (a (1, 1, H, W) mask or an array; None: empty) area-averaged to ``size``."""
    if plane is None:
        return np.zeros(size, np.float32)
    arr = plane[0, 0].float().cpu().numpy() if isinstance(plane, torch.Tensor) else plane.astype(np.float32)
    return cv2.resize(arr, size[::-1], interpolation=cv2.INTER_AREA) if arr.shape != size else arr


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _stage_previews(before: Image.Image, held: Held, result: Frame, seen: Frame, staging: Location,
                    evidence: Evidence, preset: Preset) -> None:
    """Before/after JPEGs, a mask/defect/detail-loss overlay, and QA's evidence (where it disagrees
    with the result, and the findings that failed a rule, in words with a box) for the review queue.
    ``before``: the reference's preview, made before QA held it on the piece's box only; ``seen``: the
    result at QA's level, as QA compared it with what it held."""
    size = (before.height, before.width)
    (staging / "preview" / "before.jpg").write_bytes(_jpeg(before))
    (staging / "preview" / "after.jpg").write_bytes(_jpeg(_preview(result.image, size)))
    planes = [_shrunk(result.masks.get("defects"), size), _shrunk(detail_loss_map(held, seen), size),
              _shrunk(result.alpha, size)]
    overlay = Image.fromarray((np.stack(planes, -1) * 255 + 0.5).clip(0, 255).astype(np.uint8))
    (staging / "preview" / "overlay.png").write_bytes(_png(overlay))
    where = np.zeros((*size, 4), np.uint8)
    marked = cv2.resize(evidence.overlay.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0
    where[marked] = (255, 0, 200, 170)
    (staging / "preview" / "evidence.png").write_bytes(_png(Image.fromarray(where)))
    findings = kept_findings(evidence, preset.qa)
    h, w = result.image.shape[-2:]
    (staging / "preview" / "evidence.json").write_bytes(json.dumps(
        {"size": [w, h], "findings": [dataclasses.asdict(f) for f in findings]}, indent=1).encode())


def describe_failure(exc: BaseException) -> str:
    """One line for the manifest from an unexpected error in a worker: the worker's own exception
    (a Ray task error wraps it, with the remote traceback and terminal colours in its text) and
    the line it came from."""
    cause = getattr(exc, "cause", None) or exc
    frames = re.findall(r'File "([^"]+)", line (\d+)', str(exc)) if cause is not exc else []
    if frames:
        where = f" at {Path(frames[-1][0]).name}:{frames[-1][1]}"
    else:
        last = traceback.extract_tb(cause.__traceback__)[-1] if cause.__traceback__ else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).split())
    return f"{type(cause).__name__}: {text[:300]}{where}"


def set_up_worker(cpus: int) -> None:
    """A process that retouches images one after another on ``cpus`` CPUs: that many threads for torch
    and OpenCV, and freed memory kept for the next image (``reuse_freed_memory``)."""
    torch.set_num_threads(cpus)
    cv2.setNumThreads(cpus)
    reuse_freed_memory()


class Retoucher:
    """A Ray actor that retouches images one after another, keeping the stages' networks loaded
    (``lru_cache`` in the model modules) from one image to the next, on CPU or a share of a GPU.

    It lives here, not beside the flow: a Ray worker imports the actor's module, and this one does
    not import Prefect, the catalog or the QA suite (its imports 2.9 -> 1.4 s)."""

    def __init__(self):
        import ray   # only inside a Ray worker: bench/device.py runs this module where Ray is absent

        # as many threads as CPUs booked: one actor per core, each with a pool the size of the machine,
        # ran 1.5x slower per image than one actor alone
        set_up_worker(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))

    def retouch(self, *args, **kwargs) -> Outcome:
        import ray

        outcome = retouch_image(*args, **kwargs)
        outcome.node = ray.get_runtime_context().get_node_id()
        return outcome

    def sensor_dust_evidence(self, source: Location, params: SensorDustParams) -> np.ndarray | None:
        """The sensor-dust survey's map of one frame: the survey runs on the run's actors, whose
        processes and imports are then ready for the first image."""
        return sensor_dust_evidence(source, params)
