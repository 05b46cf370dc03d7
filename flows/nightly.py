"""The scheduled nightly run: every shoot folder under a watched root."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.shoot import run_shoots


@flow(name="loupe-nightly")
def nightly(root: str, out: str, preset: str = "catalog", device: str = "auto") -> dict[str, int]:
    """Process each shoot folder under ``root``; finished images are skipped by the catalog."""
    shoots = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not shoots:
        return {}
    return run_shoots(shoots, Path(out), preset=preset, device=device)


def serve_nightly(root: Path, out: Path, *, cron: str, preset: str, device: str) -> None:
    """Register the nightly deployment with a cron schedule and serve it.

    Needs a Prefect server (``prefect server start``) and ``PREFECT_API_URL``
    pointing at it: Prefect refuses schedules on its temporary server.
    """
    nightly.serve(name="nightly", cron=cron,
                  parameters={"root": str(root.resolve()), "out": str(out.resolve()), "preset": preset, "device": device})
