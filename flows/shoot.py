"""The studio's night as a Prefect flow: ingest -> retouch -> check -> route -> export.

Prefect tasks are coarse (one per phase of a shoot); the per-image work
fans out over Ray inside ``retouch``. Per-image outcomes live in the
catalog and the manifest, not in one Prefect task run per image.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.retouch import Outcome, describe_failure, export_name, retouch_image, sensor_dust_evidence
from infra.catalog import Catalog
from infra.presets import Preset, load_preset
from infra.raycluster import ensure_ray
from infra.shoots import Shoot, Source, read_shoot
from tasks.sensor_dust import SensorDustParams, Spot, find_sensor_dust
from qa.report import thumbnail_dir, write_manifest, write_report, write_thumbnails
from qa.suite import Rule, run_suite


@dataclass(frozen=True)
class Job:
    source: Source
    view: str          # unique within the shoot (duplicates get a suffix)


@dataclass(frozen=True)
class RunConfig:
    out: Path
    state: Path
    device: str = "auto"
    ray_address: str | None = None
    progress: bool = False


def staging_dir(out: Path, shoot: str, image_id: str) -> Path:
    return out / ".staging" / shoot / image_id


@task(cache_policy=NONE)
def ingest(folder: Path, preset: Preset, catalog: Catalog, out: Path) -> list[Job]:
    """Record every file of the shoot in the catalog; return those that need processing.

    A file processed again (changed, or a new preset) first has what it published withdrawn: the
    old exports are no longer vouched for, and the new verdict may hold it for review.
    """
    shoot = read_shoot(folder)
    jobs, seen_hash, seen_name = [], {}, {}
    for src in shoot.sources:
        name = f"{src.sku}_{src.view}"
        seen_name[name] = seen_name.get(name, 0) + 1
        view = src.view if seen_name[name] == 1 else f"{src.view}-{seen_name[name]}"
        prior = catalog.get(shoot.shoot_id, src.path.name)
        base = dict(shoot=shoot.shoot_id, source=src.path.name, path=str(src.path), image_id=src.image_id,
                    sha256=src.sha256, sku=src.sku, view=view, preset=preset.name, preset_digest=preset.digest)
        finished = (prior and prior["sha256"] == src.sha256 and prior["preset_digest"] == preset.digest
                    and prior["status"] in ("exported", "review", "rejected"))
        if prior and not finished and prior["exports"]:
            withdraw(out, json.loads(prior["exports"]))
        if src.sha256 in seen_hash:
            catalog.upsert(**base, status="rejected", reasons="duplicate",
                           error=f"same content as {seen_hash[src.sha256]}")
            continue
        seen_hash[src.sha256] = src.path.name
        if finished:
            continue  # finished with this exact file and preset
        catalog.upsert(**base, status="pending", reasons="", error="", metrics={}, exports={}, staged={}, notes="")
        jobs.append(Job(src, view))
    return jobs


@task(cache_policy=NONE)
def survey_sensor_dust(shoot: Shoot, jobs: list[Job], preset: Preset, config: RunConfig) -> dict[str, list[Spot]]:
    """Find the sensor dust the shoot's frames share; return the spots to correct, per image_id.

    Every readable frame of the shoot is looked at (a reduced decode, as Ray tasks), not only
    the ones to process now: dust is told from the piece by staying put across the shoot.
    """
    import ray

    params = SensorDustParams(**preset.stages.get("sensor_dust", {}))
    unique = list({src.sha256: src for src in shoot.sources}.values())
    if not jobs or not params.enabled or len(unique) < params.min_images:
        return {}
    ensure_ray(config.ray_address)
    remote = ray.remote(num_cpus=1, max_retries=1)(sensor_dust_evidence)
    window = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
    queue, pending, maps = list(unique), {}, {}
    while queue or pending:
        while queue and len(pending) < window:
            src = queue.pop(0)
            pending[remote.remote(src.path, params)] = src
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            src = pending.pop(ref)
            try:
                evidence = ray.get(ref)
            except Exception:  # a frame that crashes a worker just adds no evidence; retouch reports it
                evidence = None
            if evidence is not None:
                maps[src.image_id] = evidence
    by_shape: dict[tuple[int, int], list[str]] = {}
    for image_id, evidence in maps.items():   # frames of one size and orientation share a sensor position
        by_shape.setdefault(evidence.shape, []).append(image_id)
    spots = {}
    for ids in by_shape.values():
        found = find_sensor_dust([maps[i] for i in ids], params)
        spots.update({i: found for i in ids if found})
    wanted = {job.source.image_id for job in jobs}
    return {i: s for i, s in spots.items() if i in wanted}


@task(cache_policy=NONE)
def retouch(jobs: list[Job], preset: Preset, config: RunConfig,
            sensor_dust: dict[str, list[Spot]] | None = None, plate: Path | None = None) -> dict[str, Outcome]:
    """Fan the images out over Ray, at most a few in flight per CPU/GPU (``plate``: the shoot's clean plate)."""
    import ray

    if not jobs:
        return {}
    ensure_ray(config.ray_address)
    use_gpu = config.device == "cuda" or (config.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    remote = ray.remote(num_gpus=1 if use_gpu else 0, max_retries=1)(retouch_image)
    device = "cuda" if use_gpu else "cpu"
    window = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
    pending: dict = {}
    outcomes: dict[str, Outcome] = {}
    queue = list(jobs)
    bar = _progress(len(jobs), config.progress)
    while queue or pending:
        while queue and len(pending) < window:
            job = queue.pop(0)
            src = job.source
            ref = remote.remote(src.path, src.image_id, preset, staging_dir(config.out, src.shoot, src.image_id),
                                device=device, sensor_dust=(sensor_dust or {}).get(src.image_id), plate=plate)
            pending[ref] = src
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            src = pending.pop(ref)
            try:
                outcomes[src.image_id] = ray.get(ref)
            except Exception as exc:  # a worker bug or crash must not sink the batch
                outcomes[src.image_id] = Outcome(src.image_id, ok=False, error=f"processing_error: {describe_failure(exc)}")
            bar.update(1)
    bar.close()
    return outcomes


@task(cache_policy=NONE)
def check(shoot: str, outcomes: dict[str, Outcome], preset: Preset, out: Path) -> dict[str, list[str]]:
    """Run the preset's Great Expectations suite on this shoot's metrics."""
    import pandas as pd

    rows = [{"image_id": i, **o.metrics} for i, o in outcomes.items() if o.ok]
    qa_dir = out / "qa" / shoot
    qa_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    rules = [Rule(**r.model_dump()) for r in preset.qa]
    if frame.empty:
        return {}
    result = run_suite(frame, rules, suite_name=f"loupe_{preset.name}", docs_dir=qa_dir / "docs")
    frame.assign(reasons=[";".join(result.reasons[i]) for i in frame["image_id"]]).to_csv(qa_dir / "metrics.csv", index=False)
    (qa_dir / "validation.json").write_text(json.dumps(result.results, indent=1))
    return result.reasons


@task(cache_policy=NONE)
def route(shoot: str, jobs: list[Job], outcomes: dict[str, Outcome], verdicts: dict[str, list[str]],
          catalog: Catalog, out: Path) -> dict[str, int]:
    """Publish passing images, queue flagged ones for review, reject unreadable ones."""
    counts = {"exported": 0, "review": 0, "rejected": 0}
    for job in jobs:
        src, o = job.source, outcomes[job.source.image_id]
        key = dict(shoot=shoot, source=src.path.name)
        common = dict(metrics=o.metrics, notes="\n".join(o.notes), seconds=round(o.seconds, 3))
        if not o.ok:
            code = o.error.split(":", 1)[0]
            catalog.set_status(**key, status="rejected", reasons=code, error=o.error, **common)
            shutil.rmtree(staging_dir(out, shoot, src.image_id), ignore_errors=True)
            counts["rejected"] += 1
            continue
        reasons = verdicts.get(src.image_id, [])
        write_thumbnails(staging_dir(out, shoot, src.image_id) / "preview", thumbnail_dir(out, shoot, src.image_id))
        if reasons:
            review = out / "review" / shoot / src.image_id
            shutil.rmtree(review, ignore_errors=True)
            shutil.move(str(staging_dir(out, shoot, src.image_id) / "preview"), review)
            catalog.set_status(**key, status="review", reasons=";".join(reasons), staged=o.staged, **common)
            catalog.enqueue(src.image_id, shoot, src.path.name, reasons)
            counts["review"] += 1
        else:
            exports = publish(out, shoot, src.sku, job.view, o.staged)
            catalog.set_status(**key, status="exported", reasons="", exports=exports, staged={}, **common)
            shutil.rmtree(staging_dir(out, shoot, src.image_id), ignore_errors=True)
            counts["exported"] += 1
    return counts


def publish(out: Path, shoot: str, sku: str, view: str, staged: dict[str, str]) -> dict[str, str]:
    """Move staged exports to their catalog names (a rename: atomic on one filesystem)."""
    target = out / "exports" / shoot
    target.mkdir(parents=True, exist_ok=True)
    exports = {}
    for name, path in staged.items():
        dest = target / f"{sku}_{view}_{Path(path).name}"
        Path(path).replace(dest)
        exports[name] = str(dest.relative_to(out))
    return exports


def withdraw(out: Path, exports: dict[str, str]) -> None:
    """Remove published exports (paths relative to ``out``) that no longer stand."""
    for path in exports.values():
        (out / path).unlink(missing_ok=True)


def merge_stages(base: dict[str, dict], extra: dict[str, dict]) -> dict[str, dict]:
    """Per-stage parameter tables with ``extra``'s keys over ``base``'s."""
    return {k: {**base.get(k, {}), **extra.get(k, {})} for k in {*base, *extra}}


def shoot_preset(shoot: Shoot, preset: str | Path) -> Preset:
    """The preset a shoot runs with: the sidecar's choice, background and stage overrides on top."""
    chosen = load_preset(shoot.preset or preset)
    if shoot.background:
        chosen = chosen.model_copy(update={"background": shoot.background})
    if shoot.stages:
        chosen = chosen.model_copy(update={"stages": merge_stages(chosen.stages, shoot.stages)})
    return chosen


@flow(name="loupe-run", log_prints=True)
def run_shoots(shoot_dirs: list[Path], out: Path, preset: str = "catalog", state: Path | None = None,
               device: str = "auto", ray_address: str | None = None, progress: bool = False) -> dict[str, int]:
    """Process shoot folders end to end; returns counts by final status for this run."""
    logger = get_run_logger()
    out = Path(out)
    config = RunConfig(out=out, state=Path(state) if state else out / ".state", device=device,
                       ray_address=ray_address, progress=progress)
    catalog = Catalog.open(config.state)
    totals = {"exported": 0, "review": 0, "rejected": 0, "skipped": 0}
    for folder in map(Path, shoot_dirs):
        shoot = read_shoot(folder)
        chosen = shoot_preset(shoot, preset)
        jobs = ingest(folder, chosen, catalog, out)
        dust = survey_sensor_dust(shoot, jobs, chosen, config)
        if dust:
            logger.info("shoot %s: sensor dust: %d spots", shoot.shoot_id, max(map(len, dust.values())))
        if shoot.plate:
            logger.info("shoot %s: clean plate %s", shoot.shoot_id, shoot.plate.name)
        outcomes = retouch(jobs, chosen, config, dust, shoot.plate)
        verdicts = check(shoot.shoot_id, outcomes, chosen, out)
        counts = route(shoot.shoot_id, jobs, outcomes, verdicts, catalog, out)
        counts["skipped"] = len(shoot.sources) - len(jobs)
        logger.info("shoot %s: %s", shoot.shoot_id, counts)
        for k, v in counts.items():
            totals[k] += v
    write_manifest(catalog, out)
    write_report(catalog, out, rules=load_preset(preset).qa)
    return totals


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="retouch", disable=not enabled, leave=True)
