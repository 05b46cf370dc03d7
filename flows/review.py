"""Reviewer decisions: approve (publish the staged exports) or reject."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sqlalchemy import update

from flows.shoot import publish, staging_dir
from infra.catalog import Catalog, review_queue
from qa.report import write_manifest


class ReviewError(ValueError):
    pass


def list_queue(state: Path | str, state_filter: str | None = "open") -> list[dict]:
    return Catalog.open(state).queue(state_filter)


def _decide(catalog: Catalog, image_id: str, decision: str, who: str, note: str) -> dict:
    row = catalog.by_image_id(image_id)
    if row is None or row["status"] != "review":
        raise ReviewError(f"{image_id} is not waiting for review")
    with catalog.engine.begin() as c:
        c.execute(update(review_queue).where(review_queue.c.image_id == image_id).values(
            state=decision, note=note, decided_at=time.time(), decided_by=who))
    return row


def approve(state: Path | str, out: Path, image_id: str, *, who: str, note: str = "") -> dict[str, str]:
    """Publish a flagged image's staged exports and mark it exported."""
    catalog = Catalog.open(state)
    row = _decide(catalog, image_id, "approved", who, note)
    exports = publish(Path(out), row["shoot"], row["sku"], row["view"], json.loads(row["staged"]))
    catalog.set_status(row["shoot"], row["source"], status="exported", exports=exports, staged={})
    shutil.rmtree(staging_dir(Path(out), row["shoot"], image_id), ignore_errors=True)
    write_manifest(catalog, Path(out))
    return exports


def reject(state: Path | str, out: Path, image_id: str, *, who: str, note: str = "") -> None:
    """Mark a flagged image rejected by a person; its staged exports are dropped."""
    catalog = Catalog.open(state)
    row = _decide(catalog, image_id, "rejected", who, note)
    reasons = ";".join(filter(None, [row["reasons"], "reviewer_rejected"]))
    catalog.set_status(row["shoot"], row["source"], status="rejected", reasons=reasons,
                       error=f"rejected by {who}: {note}".strip(), staged={})
    shutil.rmtree(staging_dir(Path(out), row["shoot"], image_id), ignore_errors=True)
    write_manifest(catalog, Path(out))
