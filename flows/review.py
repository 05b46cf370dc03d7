"""Reviewer decisions: approve (publish the staged exports), reject, or re-run with overrides.

Every decision is written to the review queue and the audit log (who, when, what); the
command line (``loupe review ...``) and the review web app (``infra/reviewapp``) call
the same functions. A re-run is the Prefect flow ``loupe-rerun``: the image goes through
the shoot flow's own tasks (sensor-dust survey, retouch on Ray, the preset's QA suite,
route), so it ends exported or back in the queue like any other image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow
from sqlalchemy import update

from flows.retouch import stage_problems
from flows.shoot import (Job, Retouchers, RunConfig, merge_stages, plan_shoot, process, publish,
                         survey_sensor_dust, write_qa_tables)
from infra.catalog import Catalog, review_queue
from infra.layout import Layout
from infra.storage import Location
from infra.presets import Preset
from infra.shoots import Identities, list_shoot
from qa.report import write_manifest
from tasks.pipeline import STAGE_NAMES

QUEUE_STATES = ("open", "rerunning", "approved", "rejected", "rerun")
MAX_NOTE = 2000      # characters: a note is stored in the queue and audit log and shown on every page of the image


class ReviewError(ValueError):
    pass


def list_queue(state: Path | str, state_filter: str | None = "open") -> list[dict]:
    return Catalog.open(state).queue(state_filter)


def _set_queue(catalog: Catalog, image_id: str, **values) -> None:
    with catalog.engine.begin() as c:
        c.execute(update(review_queue).where(review_queue.c.image_id == image_id).values(**values))


def _waiting(catalog: Catalog, image_id: str) -> dict:
    row = catalog.by_image_id(image_id)
    if row is None or row["status"] != "review":
        raise ReviewError(f"{image_id} is not waiting for review")
    queued = [q for q in catalog.queue(None) if q["image_id"] == image_id]
    if queued and queued[0]["state"] == "rerunning":
        raise ReviewError(f"{image_id} is being re-run; wait for it to come back to the queue")
    return row


def _decide(catalog: Catalog, image_id: str, decision: str, who: str, note: str) -> dict:
    if len(note) > MAX_NOTE:
        raise ReviewError(f"note too long ({len(note)} characters, at most {MAX_NOTE}): nothing recorded")
    row = _waiting(catalog, image_id)
    _set_queue(catalog, image_id, state=decision, note=note, decided_at=time.time(), decided_by=who)
    return row


def approve(state: Path | str, out: Path, image_id: str, *, who: str, note: str = "") -> dict[str, str]:
    """Publish a flagged image's staged exports and mark it exported."""
    catalog = Catalog.open(state)
    row = _decide(catalog, image_id, "approved", who, note)
    layout = Layout.of(out)
    key = dict(shoot=row["shoot"], source=row["source"])
    exports = publish(catalog, layout, key, row["sku"], row["view"], json.loads(row["staged"]))
    catalog.set_status(**key, status="exported", exports=exports, staged={})
    layout.staging(row["shoot"], image_id).rmtree()
    catalog.audit(who, "approve", image_id, {"note": note, "exports": sorted(exports.values())})
    write_manifest(catalog, out)
    return exports


def approve_many(state: Path | str, out: Path, image_ids: list[str], *, who: str) -> dict[str, str]:
    """Approve several images; returns image_id -> "exported" or the error for that image."""
    results = {}
    for image_id in image_ids:
        try:
            approve(state, out, image_id, who=who, note="batch")
            results[image_id] = "exported"
        except ReviewError as exc:
            results[image_id] = str(exc)
    return results


def reject(state: Path | str, out: Path, image_id: str, *, who: str, note: str = "") -> None:
    """Mark a flagged image rejected by a person; its staged exports are dropped."""
    catalog = Catalog.open(state)
    row = _decide(catalog, image_id, "rejected", who, note)
    reasons = ";".join(filter(None, [row["reasons"], "reviewer_rejected"]))
    catalog.set_status(row["shoot"], row["source"], status="rejected", reasons=reasons,
                       error=f"rejected by {who}: {' '.join(note.split())}".strip(), staged={})   # one line in the manifest
    Layout.of(out).staging(row["shoot"], image_id).rmtree()
    catalog.audit(who, "reject", image_id, {"note": note})
    write_manifest(catalog, out)


# --- re-run with overrides ---------------------------------------------------

def validate_overrides(overrides: dict | None) -> dict:
    """``{"stages": {name: {param: value}}, "skip": [...]}`` checked against the stages' own
    parameter models, so a bad value is the reviewer's error now, not a rejected image later."""
    overrides = overrides or {}
    unknown = set(overrides) - {"stages", "skip"}
    if unknown:
        raise ReviewError(f"unknown override key(s) {sorted(unknown)}; use 'stages' and 'skip'")
    stages = {k: dict(v) for k, v in (overrides.get("stages") or {}).items() if v}
    skip = sorted(set(overrides.get("skip") or ()))
    bad = [s for s in skip if s not in STAGE_NAMES]
    if bad:
        raise ReviewError(f"cannot skip {bad}; stages are {', '.join(STAGE_NAMES)}")
    problems = stage_problems(stages, "override")
    if problems:
        raise ReviewError("bad " + "; ".join(problems))
    return {"stages": stages, "skip": skip}


def with_overrides(preset: Preset, overrides: dict) -> Preset:
    stages = merge_stages(preset.stages, overrides["stages"])
    skip = tuple(dict.fromkeys([*preset.skip, *overrides["skip"]]))
    return preset.model_copy(update={"stages": stages, "skip": skip})


def request_rerun(state: Path | str, image_id: str, overrides: dict | None, *, who: str) -> dict:
    """Check the image and the overrides, mark it ``rerunning`` in the queue; returns the clean overrides."""
    catalog = Catalog.open(state)
    clean = validate_overrides(overrides)
    _waiting(catalog, image_id)
    _set_queue(catalog, image_id, state="rerunning", note=json.dumps(clean, sort_keys=True),
               decided_at=time.time(), decided_by=who)
    catalog.audit(who, "rerun", image_id, clean)
    return clean


@flow(name="loupe-rerun", log_prints=True)
def rerun_flow(state: str, out: str, image_id: str, overrides: dict, who: str, preset: str | None = None,
               device: str = "auto", ray_address: str | None = None) -> str:
    """Re-process one flagged image with overrides through the shoot flow's tasks; returns its new status."""
    out = Location.of(out)
    catalog = Catalog.open(state)
    try:
        row = catalog.by_image_id(image_id)
        folder = Location.of(row["path"]).parent
        plan = plan_shoot(list_shoot(folder), preset or row["preset"])    # the light of its grey card too
        shoot = plan.shoot
        with Identities(shoot.sources, ahead=0) as identities:   # only the file and the survey's sample are read
            src = next((s for s in identities.named([s for s in shoot.sources if s.path.name == row["source"]])
                        if s.image_id == image_id), None)
            if src is None:
                raise ReviewError(f"{row['path']} is gone or changed since it was processed")
            if plan.preset is None:
                problems = "\n".join(plan.problems)
                raise ReviewError(f"{problems} (start the review app / command with --preset FILE)")
            chosen = with_overrides(plan.preset, overrides)
            job = Job(src, row["view"])
            config = RunConfig(out=out, state=str(state), device=device, ray_address=ray_address)
            with Retouchers(ray_address, device) as retouchers:
                dust = survey_sensor_dust(shoot, chosen, retouchers.grow(1), identities)
                counts = process(shoot, chosen, [job], config, catalog, retouchers, sensor_dust=dust)
        write_qa_tables(config.layout.rerun_qa(shoot.shoot_id, image_id), [catalog.by_image_id(image_id)], chosen)
    except Exception as exc:
        _set_queue(catalog, image_id, state="open")
        catalog.audit(who, "rerun_failed", image_id, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    status = next(k for k, v in counts.items() if v)
    if status != "review":   # route re-queues an image that fails QA again; otherwise the queue row is done
        _set_queue(catalog, image_id, state="rerun")
    new = catalog.by_image_id(image_id)
    catalog.audit(who, "rerun_done", image_id, {"status": status, "reasons": new["reasons"]})
    write_manifest(catalog, out)
    return status


def rerun(state: Path | str, out: Path, image_id: str, overrides: dict | None, *, who: str,
          preset: str | None = None, device: str = "auto", ray_address: str | None = None) -> str:
    """Re-run a flagged image now (blocking); returns ``exported``, ``review`` or ``rejected``."""
    clean = request_rerun(state, image_id, overrides, who=who)
    return rerun_flow(str(state), str(out), image_id, clean, who, preset, device, ray_address)


def parse_set(items: list[str]) -> dict[str, dict]:
    """``["dust.strength=0.3", "cutout.band=4"]`` -> ``{"dust": {"strength": 0.3}, "cutout": {"band": 4}}``."""
    stages: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, param = key.strip().partition(".")
        if not (sep and dot and stage and param):
            raise ReviewError(f"--set wants STAGE.PARAM=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        stages.setdefault(stage, {})[param] = parsed
    return stages
