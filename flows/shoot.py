"""The studio's night as a Prefect flow: plan -> ingest -> retouch, check, route (per image) -> report.

Prefect tasks are coarse (one per phase of a shoot); the per-image work fans out over Ray inside
``process``. Each image's outcome is committed to the catalog as soon as its Ray task returns and
the QA suite has judged it, so a crash anywhere loses at most the images in flight: the next run
takes up ``pending`` and ``retryable`` rows and skips the finished ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError

from flows.preflight import missing_gpu
from flows.retouch import Outcome, Retoucher, checked_preset, describe_failure, read_card, stage_problems
from infra.catalog import TERMINAL, Catalog, RunLock, process_alive
from infra.errors import OperatorError
from infra.failpoints import failpoint
from infra.imageio import UnreadableSource
from infra.layout import Layout, default_state
from infra.presets import Preset, PresetError, parse_preset
from infra.raycluster import ensure_ray
from infra.shoots import SIDECAR, Identities, Shoot, Source, assign_views, hashed, list_shoot
from infra.storage import Location
from qa.report import write_manifest, write_report, write_thumbnails
from qa.suite import Rule, run_suite
from tasks.neutralize import NotACard
from tasks.sensor_dust import BackdropTexture, SensorDustParams, SurveyFound, find_sensor_dust, survey_sample

GPU_MEMORY_PER_IMAGE = 6 << 30   # GPU bytes an actor may take: 2.0 GiB allocated at 24 MP (H200), room for 50 MP
IMAGES_PER_GPU_UNSEEN = 4        # actors per GPU where its memory is not known (a GPU of another machine)
TRIES = 3                  # attempts per image in one run when the fault is the machine's, not the image's
BACKOFF_S = (2.0, 8.0)     # wait before the 2nd and 3rd attempt


@dataclass(frozen=True)
class Job:
    source: Source
    view: str          # unique within the shoot (see infra.shoots.assign_views)


@dataclass(frozen=True)
class RunConfig:
    out: Location
    state: str
    device: str = "auto"
    ray_address: str | None = None
    progress: bool = False

    @property
    def layout(self) -> Layout:
        return Layout(self.out)


@dataclass
class ShootPlan:
    """A shoot read and its settings checked before any image is processed."""

    shoot: Shoot
    preset: Preset | None                     # None: the shoot's configuration is broken (``problems``)
    problems: list[str] = field(default_factory=list)
    light: str = ""                           # what came of the shoot's grey card ("" without one)


# --- settings ------------------------------------------------------------------

def merge_stages(base: dict[str, dict], extra: dict[str, dict]) -> dict[str, dict]:
    """Per-stage parameter tables with ``extra``'s keys over ``base``'s."""
    return {k: {**base.get(k, {}), **extra.get(k, {})} for k in {*base, *extra}}


def shoot_preset(shoot: Shoot, preset: str | Path) -> Preset:
    """The preset a shoot runs with: the sidecar's choice, background and stage overrides on top,
    all validated (``PresetError`` with one line per problem, naming the file and key)."""
    if shoot.problems:
        raise PresetError("\n".join(shoot.problems))
    sidecar = shoot.folder / SIDECAR
    try:
        chosen = checked_preset(shoot.preset or preset)
    except PresetError as exc:
        raise PresetError(f"{sidecar}: {exc}" if shoot.preset else str(exc)) from None
    problems = stage_problems(shoot.stages, str(sidecar))
    if problems:
        raise PresetError("\n".join(problems))
    data = chosen.model_dump()
    if shoot.background:
        data["background"] = shoot.background
    data["stages"] = merge_stages(chosen.stages, shoot.stages)
    try:
        return parse_preset(data, source=str(sidecar))
    except PresetError as exc:
        raise PresetError("\n".join(exc.args[0].splitlines()[1:])) from None


def plan_shoots(shoot_dirs: list[str | Path], preset: str) -> list[ShootPlan]:
    return [plan_shoot(list_shoot(folder), preset) for folder in map(Location.of, shoot_dirs)]


def plan_shoot(shoot: Shoot, preset: str | Path) -> ShootPlan:
    """A listed shoot's settings, checked, with the light of its grey card (``card_lit``) in them."""
    try:
        chosen = shoot_preset(shoot, preset)
    except PresetError as exc:
        return ShootPlan(shoot, None, str(exc).splitlines())
    lit, light = card_lit(shoot, chosen)
    return ShootPlan(lit, chosen if lit is shoot else shoot_preset(lit, preset), light=light)


def card_lit(shoot: Shoot, preset: Preset) -> tuple[Shoot, str]:
    """``shoot`` with the light read off its grey card as ``[stages.neutralize] kelvin`` and ``tint``, and
    what came of the card in a clause ("light 4809 K, tint +0.0040", or why it was not read: then the
    shoot goes on as without it). A light ``shoot.toml`` gives wins: it is the studio's own word."""
    if shoot.card is None:
        return shoot, ""
    if "kelvin" in shoot.stages.get("neutralize", {}):
        return shoot, f"not read: {SIDECAR} gives the light ([stages.neutralize] kelvin)"
    try:
        kelvin, tint = read_card(shoot.card, preset.stages.get("develop", {}))
    except (UnreadableSource, NotACard) as exc:
        return shoot, f"not read: {exc}; the light is read off each frame's backdrop"
    stages = merge_stages(shoot.stages, {"neutralize": {"kelvin": kelvin, "tint": tint}})
    return replace(shoot, stages=stages), f"light {kelvin} K, tint {tint:+.4f}"


# --- ingest ----------------------------------------------------------------------

def decide(src: Source, prior: dict | None, plan: ShootPlan, first_with_hash: str | None) -> tuple[str, str, str]:
    """What a run does with one source file: ``(action, reason, detail)``, action one of
    ``process``, ``skip`` (finished with this exact file and preset) or ``reject``."""
    if src.refused:
        code, _, why = src.refused.partition(": ")
        return "reject", code, why
    if plan.preset is None:
        if prior and prior["sha256"] == src.sha256 and prior["status"] in TERMINAL and prior["reasons"] != "bad_config":
            # finished under a sidecar that was fine: a typo made since must not withdraw what was published
            return "skip", prior["status"], "kept as it was: shoot.toml has problems now"
        return "reject", "bad_config", plan.problems[0]
    if first_with_hash:
        return "reject", "duplicate", f"same content as {first_with_hash}"
    if (prior and prior["sha256"] == src.sha256 and prior["preset_digest"] == plan.preset.digest
            and prior["status"] in TERMINAL):
        return "skip", prior["status"], "finished with this file and preset"
    return "process", "", ""


class Intake:
    """Records a shoot's files in the catalog as their identities become known, in folder order, and
    hands out those to process (``infra.shoots.Identities`` hashes a few files ahead): the first images
    start while the rest of a big shoot is still being read.

    A file processed again (changed, new preset, or an earlier run stopped before finishing it)
    first has what it published withdrawn and its leftovers cleared: the old exports are no longer
    vouched for, and the new verdict may hold it for review. Each batch of rows is one transaction,
    but a published file's row is written at once after its files go (the catalog never lists an
    export that is gone), and staging is cleared only once its row is pending (a kill in between
    leaves a folder ``sweep`` clears, never a review without its staged exports). A run killed part of
    the way leaves the files it had not reached without a row; the next run records them.
    """

    def __init__(self, plan: ShootPlan, catalog: Catalog, layout: Layout, ahead: int = Identities.AHEAD):
        self.plan, self.catalog, self.layout = plan, catalog, layout
        shoot = plan.shoot
        self.known = {r["source"]: r for r in catalog.rows(shoot.shoot_id)}
        self.views = assign_views(shoot.sources, {k: r["view"] for k, r in self.known.items()})
        self.identities = Identities(shoot.sources, ahead)
        self.first_with_hash: dict[str, str] = {}
        self.actions: Counter = Counter()      # process / skip / reject, for the files recorded so far

    @property
    def done(self) -> bool:
        """Every file of the shoot is recorded."""
        return self.identities.done

    @property
    def unrecorded(self) -> int:
        """Files of the shoot not recorded yet."""
        return len(self.plan.shoot.sources) - sum(self.actions.values())

    def take(self, wait: float = 0.0) -> list[Job]:
        """Record the files whose identity is known now (waiting up to ``wait`` seconds for one) and
        return the jobs among them."""
        shoot, preset = self.plan.shoot, self.plan.preset
        jobs, rows = [], []
        for src in self.identities.ready(wait):
            prior = self.known.get(src.path.name)
            action, reason, detail = decide(src, prior, self.plan, self.first_with_hash.get(src.sha256))
            self.first_with_hash.setdefault(src.sha256, src.path.name)
            self.actions[action] += 1
            if action == "skip":
                continue
            row = dict(shoot=shoot.shoot_id, source=src.path.name, path=str(src.path), image_id=src.image_id,
                       sha256=src.sha256, sku=src.sku, view=self.views[src.path.name],
                       preset=preset.name if preset else "", preset_digest=preset.digest if preset else "",
                       metrics={}, exports={}, staged={}, notes="",
                       **(dict(status="rejected", reasons=reason, error=detail) if action == "reject"
                          else dict(status="pending", reasons="", error="")))
            if published := json.loads(prior["exports"] or "{}") if prior else {}:
                withdraw(self.layout, published)
                self.catalog.upsert_many([row], dequeue=[src.image_id] if action == "process" else [])
            else:
                rows.append(row)
            if action == "process":
                jobs.append(Job(src, self.views[src.path.name]))
        if rows or jobs:
            self.catalog.upsert_many(rows, dequeue=[job.source.image_id for job in jobs])
            for job in jobs:
                self.layout.staging(shoot.shoot_id, job.source.image_id).rmtree()
            failpoint("run.ingested")
        return jobs

    def first(self) -> list[Job]:
        """Record files until one needs processing (its job and those read with it) or none is left."""
        while not self.done:
            if jobs := self.take(wait=60.0):
                return jobs
        return []

    def close(self) -> None:
        self.identities.close()

    def __enter__(self) -> Intake:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def withdraw(layout: Layout, exports: dict[str, str]) -> None:
    """Remove published exports (paths relative to OUT) that no longer stand."""
    for path in exports.values():
        layout.abs(path).unlink()


def sweep(layout: Layout, catalog: Catalog) -> None:
    """Clear what a killed run left: temporary ``.part`` files and staging folders of images no
    longer waiting for anything (an image in review keeps its staged exports for the approval)."""
    for part in layout.partial_files():
        part.unlink(missing_ok=True)
    in_review = {r["image_id"] for r in catalog.rows() if r["status"] == "review"}
    staging = layout.staging_root()
    for shoot_dir in staging.iterdir() if staging.is_dir() else ():
        for image_dir in shoot_dir.iterdir():
            if image_dir.name not in in_review:
                image_dir.rmtree()


# --- per image: retouch on Ray, check, route -------------------------------------------

def gpu_actor_plan(nodes: list[dict], gpu_memory: dict[str, int]) -> tuple[int, int]:
    """(actors per GPU, the CPUs each books and runs as many threads on) for Ray's ``nodes``;
    ``gpu_memory``: the smallest GPU's bytes on the nodes where it is known.

    One actor per core of a GPU's share of its node, as many as its memory holds
    (``GPU_MEMORY_PER_IMAGE`` each; ``IMAGES_PER_GPU_UNSEEN`` where not known): most of an image's
    work stays on the CPU (decode, the cut-out's and QA's decisions, encodes) and runs on one thread,
    so cores pay as processes, not threads. On the 16-core H200 box (``bench/device.py``, 24 MP, two
    leases): 4 actors x 4 threads 24-32 images/min, 8 x 2 40-44, 16 x 1 64-74 (issue 13). The smallest
    GPU node's plan, so that every actor can be placed."""
    plans = []
    for n in nodes:
        gpus = n["Resources"].get("GPU", 0)
        if not n.get("Alive") or gpus <= 0:
            continue
        share = max(1, int(n["Resources"].get("CPU", 0) // gpus))
        memory = gpu_memory.get(n.get("NodeID", ""))
        fits = memory // GPU_MEMORY_PER_IMAGE if memory else IMAGES_PER_GPU_UNSEEN
        plans.append((share, max(1, min(share, fits))))
    if not plans:
        return 1, 1
    actors = min(a for _, a in plans)
    return actors, max(1, min(share // actors for share, _ in plans))


def local_gpu_memory() -> int:
    """The smallest GPU's memory on this machine in bytes (0: none seen), from ``nvidia-smi``: no CUDA
    context in the driver for it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return min((int(v) << 20 for v in out.split()), default=0)   # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0


class Retouchers:
    """The run's ``Retoucher`` actors: one per CPU, or per GPU as many as ``gpu_actor_plan`` gives (a GPU
    share and the node's CPUs shared out each, CPU work of one image overlapping GPU work of another);
    restarted by Ray if one dies.

    Started once per run, before the sensor-dust survey, which runs on them too: their processes,
    imports and networks are paid once, while the survey reads, not after it (a survey in Ray
    tasks of its own, then the actors, cost 4-5 s before the first image on 2 cores). `loupe run`
    starts them earlier still (``retouchers_ahead``)."""

    def __init__(self, ray_address: str | None, device: str):
        self.ray_address = ray_address
        self.device_asked = device
        self.device = "cpu"
        self.actors: list = []

    def grow(self, jobs: int) -> Retouchers:
        """At least one actor per job, up to one per CPU or GPU share (a shoot of 2 images takes no
        more cores); Ray starts on the first call."""
        import ray

        if not self.actors:
            ensure_ray(self.ray_address)
            resources = ray.cluster_resources()
            gpus = resources.get("GPU", 0)
            device = self.device_asked
            use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
            cpus = max(1, int(resources.get("CPU", 1)))
            per_gpu, booked = 1, 1
            if use_gpu:    # this machine's GPUs are known; a GPU of another node is not
                here = ray.get_runtime_context().get_node_id()
                per_gpu, booked = gpu_actor_plan(ray.nodes(), {here: local_gpu_memory()})
            self._limit = min(cpus // booked, int(gpus * per_gpu)) if use_gpu else cpus
            self.device = "cuda" if use_gpu else "cpu"
            self._actor = ray.remote(num_cpus=booked, num_gpus=1 / per_gpu if use_gpu else 0,
                                     max_restarts=-1)(Retoucher)
        while len(self.actors) < max(1, min(jobs, self._limit)):
            self.actors.append(self._actor.remote())
        return self

    def close(self) -> None:
        """Free their CPUs/GPU shares now, not when Ray gets round to it."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __enter__(self) -> Retouchers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# the actor sets `retouchers_ahead` holds open (a list, not a ContextVar: Prefect pickles this module by
# value when it serves a flow, and a ContextVar does not pickle)
_AHEAD: list[Retouchers] = []


@contextlib.contextmanager
def retouchers_ahead(shoot_dirs: list[str | Path], ray_address: str | None, device: str) -> Iterator[Retouchers]:
    """Start the actors of a run before its flow starts, for ``run_shoots`` called inside the block (on
    the same cluster and device) to take over: `loupe run` starts them while it waits for Prefect's
    server, where the flow started them only after (their processes, imports and networks: 2.4-2.6 s
    before the survey's first map on 2 cores). As many as the folders hold sources, up to one per CPU
    or GPU share; none when a folder cannot be listed (the flow says why)."""
    try:
        sources = sum(not src.refused for folder in shoot_dirs for src in list_shoot(folder).sources)
    except (OSError, OperatorError):
        sources = 0
    with Retouchers(ray_address, device) as retouchers:
        if sources:
            retouchers.grow(sources)
        _AHEAD.append(retouchers)
        try:
            yield retouchers
        finally:
            _AHEAD.remove(retouchers)


@task(cache_policy=NONE)
def survey_sensor_dust(shoot: Shoot, preset: Preset, workers: Retouchers, identities: Identities) -> SurveyFound:
    """Find the sensor dust the shoot's frames share: spots by evidence-map shape (``spots_for``
    gives a frame its own).

    The survey reads an even sample of the whole shoot (``survey_frames``; a reduced decode each,
    on the run's actors), not only the frames to process now: dust is told from the piece by
    staying put across the shoot. Only the sample is hashed first (a file twice in it counts once).
    """
    import ray

    params = SensorDustParams(**preset.stages.get("sensor_dust", {}))
    candidates = [src for src in shoot.sources if not src.refused]
    if not params.enabled or len(candidates) < params.min_images:
        return {}
    named = identities.named(survey_sample(candidates, params.survey_frames))
    queue = list({src.sha256: src for src in named}.values())
    if len(queue) < params.min_images:
        return {}
    pending, busy, maps = {}, Counter(), []
    while queue or pending:
        while queue and len(pending) < 2 * len(workers.actors):
            actor = min(workers.actors, key=lambda a: busy[a])
            busy[actor] += 1
            pending[actor.sensor_dust_evidence.remote(queue.pop(0).path, params)] = actor
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            busy[pending.pop(ref)] -= 1
            try:
                evidence = ray.get(ref)
            except Exception:  # a frame that crashes a worker just adds no evidence; retouch reports it
                evidence = None
            if evidence is not None:
                maps.append(evidence)
    by_shape: dict[tuple[int, int], list] = {}
    for evidence in maps:   # frames of one size and orientation share a sensor position
        by_shape.setdefault(evidence.shape, []).append(evidence)
    found = {}
    for (h, w), group in by_shape.items():
        try:
            found[h, w] = find_sensor_dust(group, params)
        except BackdropTexture as exc:   # the operator hears why a dusty sensor was left alone
            _say(_logger(), f"shoot {shoot.shoot_id}: sensor dust ({w}x{h} evidence): {exc}")
    return {shape: spots for shape, spots in found.items() if spots}


def transient_reason(exc: BaseException) -> str | None:
    """The reason code of a fault that another try may not meet (the machine's, not the image's),
    else None: a worker or node lost, memory exhausted, storage unreachable or full."""
    import ray.exceptions as rx

    if isinstance(exc, rx.OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OwnerDiedError,
                        rx.RayActorError, rx.RaySystemError)):
        return "worker_lost"
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).lower()
    if isinstance(cause, MemoryError) or "can't allocate memory" in text or "out of memory" in text:
        return "out_of_memory"
    if isinstance(cause, (OSError, ConnectionError, TimeoutError)):
        return "storage"
    return None


@dataclass
class _Attempt:
    job: Job
    tries: int = 0
    not_before: float = 0.0


@task(cache_policy=NONE)
def process(shoot: Shoot, preset: Preset, jobs: list[Job], config: RunConfig, catalog: Catalog,
            retouchers: Retouchers, *, intake: Intake | None = None, sensor_dust: SurveyFound | None = None,
            lock: RunLock | None = None) -> Counter:
    """Retouch the jobs, and those the ``intake`` records while they run, on the run's actors (two in
    flight per actor); whatever has arrived is checked with the preset's suite and routed at once, one
    catalog commit per image. Transient faults are retried with back-off, then left ``retryable``; a bug
    in a worker rejects that image only."""
    import ray

    shoot_id, layout = shoot.shoot_id, config.layout
    counts: Counter = Counter()
    more = intake is not None and not intake.done      # files the intake has still to record
    handed = len(jobs)                                   # jobs handed to this loop so far
    expected = handed + (intake.unrecorded if intake else 0)
    retouchers.grow(expected)
    device, workers = retouchers.device, retouchers.actors
    slots = 2 * len(workers)
    waiting = [_Attempt(job) for job in jobs]
    pending: dict = {}                       # object ref -> (attempt, worker)
    busy = Counter()                         # images queued per worker: at most two (one running, one next)
    bar = _progress(shoot_id, expected, config.progress)
    while waiting or pending or more:
        now = time.monotonic()
        wake = min((a.not_before for a in waiting), default=now + 30) - now
        if more and len(waiting) + len(pending) < slots:
            idle = not pending and not any(a.not_before <= now for a in waiting)
            taken = intake.take(wait=max(0.0, wake) if idle else 0.0)
            waiting += [_Attempt(job) for job in taken]
            more = not intake.done
            handed += len(taken)
            bar.total = handed + intake.unrecorded
            bar.refresh()
            now = time.monotonic()
        for attempt in [a for a in waiting if a.not_before <= now][:max(0, slots - len(pending))]:
            waiting.remove(attempt)
            src = attempt.job.source
            attempt.tries += 1
            worker = min(workers, key=lambda w: busy[w])
            busy[worker] += 1
            pending[worker.retouch.remote(src.path, src.image_id, preset, layout.staging(shoot_id, src.image_id),
                                          device=device, sensor_dust=sensor_dust,
                                          plate=shoot.plate)] = (attempt, worker)
        wake = min((a.not_before for a in waiting), default=now + 30) - now
        if more and len(waiting) + len(pending) < slots:
            wake = min(wake, 0.2)            # a slot is free: look again soon for the next file's identity
        if not pending:
            if not more or len(waiting) >= slots:
                time.sleep(max(0.0, wake))
            continue
        done, rest = ray.wait(list(pending), num_returns=1, timeout=max(0.1, min(30.0, wake)))
        if done and rest:   # take everything that is ready now: one QA call for all of it
            done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        arrived = []
        for ref in done:
            attempt, worker = pending.pop(ref)
            busy[worker] -= 1
            try:
                arrived.append((attempt.job, ray.get(ref)))
            except Exception as exc:
                reason = transient_reason(exc)
                if reason and attempt.tries < TRIES:
                    attempt.not_before = time.monotonic() + BACKOFF_S[attempt.tries - 1]
                    waiting.append(attempt)
                    continue
                code = f"retryable: {reason}" if reason else "processing_error"
                arrived.append((attempt.job, Outcome(attempt.job.source.image_id, ok=False,
                                                     error=f"{code}: {describe_failure(exc)}")))
        verdicts = judge([o for _, o in arrived], preset)
        for job, outcome in arrived:
            counts[route_one(shoot_id, job, outcome, verdicts.get(outcome.image_id, []), catalog, layout)] += 1
            bar.update(1)
        if lock is not None:
            lock.beat()
    bar.close()
    return counts


def judge(outcomes: list[Outcome], preset: Preset) -> dict[str, list[str]]:
    """The preset's Great Expectations suite on the metrics of the images that were processed."""
    import pandas as pd

    frame = pd.DataFrame([{"image_id": o.image_id, **o.metrics} for o in outcomes if o.ok])
    if frame.empty:
        return {}
    rules = [Rule(**r.model_dump()) for r in preset.qa]
    return run_suite(frame, rules, suite_name=f"loupe_{preset.name}").reasons


def route_one(shoot: str, job: Job, o: Outcome, reasons: list[str], catalog: Catalog, layout: Layout) -> str:
    """Publish a passing image, hold a flagged one for review, reject (or leave retryable) a failed one;
    returns the status committed. Each step is safe to be killed in: see ``ingest`` and ``sweep``."""
    src = job.source
    key = dict(shoot=shoot, source=src.path.name)
    common = dict(metrics=o.metrics, notes="\n".join(o.notes), seconds=round(o.seconds, 3), node=o.node,
                  timings={k: round(v, 3) for k, v in o.timings.items()})
    staging = layout.staging(shoot, src.image_id)
    if not o.ok:
        status = "retryable" if o.error.startswith("retryable:") else "rejected"
        code = o.error.split(": ", 2)[1] if status == "retryable" else o.error.split(":", 1)[0]
        catalog.set_status(**key, status=status, reasons=code, error=o.error, **common)
        staging.rmtree()
        return status
    write_thumbnails(staging / "preview", layout.thumbs(shoot, src.image_id))
    review = layout.review(shoot, src.image_id)
    review.rmtree()
    if reasons:
        (staging / "preview").move_tree(review)
        failpoint("route.review")
        catalog.hold_for_review(shoot, src.path.name, src.image_id, reasons,
                                staged={k: layout.rel(v) for k, v in o.staged.items()}, **common)
        return "review"
    exports = publish(catalog, layout, key, src.sku, job.view, {k: layout.rel(v) for k, v in o.staged.items()})
    catalog.set_status(**key, status="exported", reasons="", exports=exports, staged={}, **common)
    staging.rmtree()
    failpoint("route.done")
    return "exported"


def publish(catalog: Catalog, layout: Layout, key: dict, sku: str, view: str, staged: dict[str, str]) -> dict[str, str]:
    """Move staged exports (paths relative to OUT) to their catalog names, each by one rename.

    The names are recorded in the catalog first, so a run killed half-way through has them
    withdrawn by the next run before the image is processed again: never a half-published image.
    """
    exports = {name: layout.rel(layout.export_file(key["shoot"], sku, view, Path(path).name))
               for name, path in staged.items()}
    catalog.set_status(**key, exports=exports)
    failpoint("route.recorded")
    for name, path in staged.items():
        layout.abs(path).replace(layout.abs(exports[name]))
        failpoint("route.moved")
    return exports


def docs_scratch() -> tempfile.TemporaryDirectory:
    """A temporary folder for GX's Data Docs, named after this process. A run killed while it held
    one (SIGKILL, a failpoint) leaves it behind; the folders of processes no longer alive go here."""
    root = Path(tempfile.gettempdir())
    for left in root.glob("loupe-gx-*-*"):
        pid = left.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"loupe-gx-{os.getpid()}-")


def write_qa_tables(qa_dir: Location, rows: list[dict], preset: Preset) -> None:
    """``metrics.csv`` (the metrics and routed reasons of the given catalog rows) and the Great
    Expectations results and Data Docs for them, under ``qa_dir``."""
    import pandas as pd

    rows = [r for r in rows if r["metrics"] not in ("", "{}")]
    if not rows:
        return
    frame = pd.DataFrame([{"image_id": r["image_id"], **json.loads(r["metrics"])} for r in rows])
    rules = [Rule(**r.model_dump()) for r in preset.qa]
    with docs_scratch() as tmp:   # GX writes its Data Docs to a folder
        result = run_suite(frame, rules, suite_name=f"loupe_{preset.name}", docs_dir=Path(tmp))
        failpoint("run.qa_tables")
        (qa_dir / "docs").rmtree()
        for page in Path(tmp).rglob("*"):
            if page.is_file():
                (qa_dir / "docs" / str(page.relative_to(tmp))).write_bytes(page.read_bytes())
    table = frame.assign(reasons=[r["reasons"] for r in rows]).to_csv(index=False)
    (qa_dir / "metrics.csv").write_bytes(table.encode())
    (qa_dir / "validation.json").write_bytes(json.dumps(result.results, indent=1).encode())


# --- the run ---------------------------------------------------------------------------

def dry_run(shoot_dirs: list[str | Path], out: str | Path, preset: str = "catalog", state: str | None = None) -> list[str]:
    """What ``run_shoots`` would do with each file, and why, without touching the catalog or OUT."""
    lines = []
    state = str(state or default_state(out))
    catalog = Catalog.open(state) if "://" in state or Path(state).is_dir() else None
    for plan in plan_shoots(shoot_dirs, preset):
        shoot = hashed(plan.shoot)          # the listing the plan checked, not a second one
        lines += [f"error: {p}" for p in plan.problems]
        known = {r["source"]: r for r in catalog.rows(shoot.shoot_id)} if catalog else {}
        seen: dict[str, str] = {}
        for src in shoot.sources:
            action, reason, detail = decide(src, known.get(src.path.name), plan, seen.get(src.sha256))
            seen.setdefault(src.sha256, src.path.name)
            why = f"  ({reason}: {detail})" if reason else ""
            lines.append(f"{action:8} {shoot.shoot_id}/{src.path.name}{why}")
        lines += [f"ignore   {shoot.shoot_id}/{name}" for name in shoot.ignored]
        lines += [f"card     {shoot.shoot_id}/{shoot.card.name}  ({plan.light})"] if shoot.card else []
    return lines


@flow(name="loupe-run", validate_parameters=False)   # folders arrive as str, Path or Location: Location.of reads all
def run_shoots(shoot_dirs: list[str | Path], out: str | Path, preset: str = "catalog", state: str | Path | None = None,
               device: str = "auto", ray_address: str | None = None, progress: bool = False) -> dict[str, int]:
    """Process shoot folders end to end; returns counts by final status for this run (``config_errors``:
    problems found in presets/sidecars; those shoots' files are rejected, the others processed)."""
    logger = get_run_logger()
    out = Location.of(out)
    config = RunConfig(out=out, state=str(state or default_state(out)), device=device,
                       ray_address=ray_address, progress=progress)
    layout = config.layout
    rules = checked_preset(preset).qa
    plans = plan_shoots(shoot_dirs, preset)
    catalog = Catalog.open(config.state)
    totals = Counter({"exported": 0, "review": 0, "rejected": 0, "retryable": 0, "skipped": 0})
    totals["config_errors"] = sum(len(p.problems) for p in plans)
    for plan in plans:
        for problem in plan.problems:
            _say(logger, f"error: {problem}")
    if (why := missing_gpu(device, ray_address)) is not None:
        raise OperatorError(why)
    ahead = next((r for r in reversed(_AHEAD) if (r.ray_address, r.device_asked) == (ray_address, device)),
                 None) or Retouchers(ray_address, device)
    with catalog.lock() as lock, ahead as retouchers:
        sweep(layout, catalog)
        for plan in plans:
            shoot = plan.shoot
            ignored = f"; ignored: {', '.join(shoot.ignored)}" if shoot.ignored else ""
            _say(logger, f"shoot {shoot.shoot_id}: {len(shoot.sources)} files{ignored}")
            with Intake(plan, catalog, layout) as intake:
                counts = Counter()
                if jobs := intake.first():
                    dust = survey_sensor_dust(shoot, plan.preset, retouchers.grow(len(jobs) + intake.unrecorded),
                                              intake.identities)
                    if dust:
                        _say(logger, f"shoot {shoot.shoot_id}: sensor dust: {max(map(len, dust.values()))} spots")
                    if shoot.plate:
                        _say(logger, f"shoot {shoot.shoot_id}: clean plate {shoot.plate.name}")
                    if shoot.card:
                        _say(logger, f"shoot {shoot.shoot_id}: grey card {shoot.card.name}: {plan.light}")
                    counts = process(shoot, plan.preset, jobs, config, catalog, retouchers, intake=intake,
                                     sensor_dust=dust, lock=lock)
                if plan.preset is not None:
                    write_qa_tables(layout.qa(shoot.shoot_id), catalog.rows(shoot.shoot_id), plan.preset)
                counts["rejected"] += intake.actions["reject"]
                counts["skipped"] = intake.actions["skip"]
            _say(logger, f"shoot {shoot.shoot_id}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
            totals.update(counts)
        failpoint("run.manifest")
        write_manifest(catalog, out)
        write_report(catalog, out, rules=rules)
    return dict(totals)


def _logger():
    """The Prefect run's logger, or Loupe's own outside a run (a task's ``.fn`` called directly)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("loupe")


def _say(logger, line: str) -> None:
    """A line for the operator's terminal and for Prefect's run log."""
    print(line, file=sys.stderr, flush=True)
    logger.info(line)


def _progress(shoot: str, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=shoot, disable=not enabled, leave=True, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0)
