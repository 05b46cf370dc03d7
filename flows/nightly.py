"""The scheduled nightly run: every shoot folder under a watched root."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prefect import flow

from flows.shoot import run_shoots
from infra.storage import Location

HOW_TO_START = ("start one with `prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`, "
                "or pass --start-server")


@flow(name="loupe-nightly")
def nightly(root: str, out: str, preset: str = "catalog", device: str = "auto", state: str | None = None,
            ray_address: str | None = None) -> dict[str, int]:
    """Process each shoot folder under ``root`` (a folder or an S3 prefix); finished images are
    skipped by the catalog."""
    shoots = [str(loc) for loc, is_dir in Location.of(root).entries() if is_dir and not loc.name.startswith(".")]
    if not shoots:
        return {}
    return run_shoots(shoots, out, preset=preset, state=state, device=device, ray_address=ray_address)


def local_timezone() -> str:
    """The machine's IANA zone (TZ, /etc/localtime), or UTC when it has none."""
    import tzlocal

    with contextlib.suppress(Exception):
        return tzlocal.get_localzone_name() or "UTC"
    return "UTC"


def check_schedule(cron: str, timezone: str) -> str | None:
    """None when Prefect accepts the cron expression and the zone, else why not (one line)."""
    from pydantic import ValidationError
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as e:
        return "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
    return None


def server_healthy(api_url: str, timeout: float = 5.0) -> str | None:
    """None when the Prefect API at ``api_url`` answers its health endpoint, else why not."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return None if r.status == 200 else f"health answered HTTP {r.status}"
    except Exception as e:  # refused, timed out, bad URL, HTTP error
        return str(getattr(e, "reason", e)) or type(e).__name__


@contextlib.contextmanager
def prefect_server(port: int = 0, timeout: float = 120.0):
    """Run ``prefect server start`` on loopback as a child process; yields its API URL; stops it on exit."""
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)])
    try:
        deadline = time.monotonic() + timeout
        while server_healthy(url, timeout=2):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy at {url} after {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen | None) -> None:
    """End a child process: SIGTERM, then SIGKILL if it has not gone within 20 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _abs(path: Path | str | None) -> str | None:
    """Absolute path for a folder, unchanged for a URL: flow runs need not share our working directory."""
    if path is None or "://" in str(path):
        return None if path is None else str(path)
    return str(Path(path).resolve())


def serve_nightly(root: Path, out: Path, *, cron: str, timezone: str | None = None, preset: str = "catalog",
                  device: str = "auto", state: Path | str | None = None, ray_address: str | None = None,
                  start_server: int | None = None) -> int:
    """Register the nightly deployment with a cron schedule and serve it until stopped; returns an exit code.

    Needs a Prefect server (Prefect refuses schedules on its temporary one): the one at ``PREFECT_API_URL``,
    or with ``start_server`` (a port, 0 for a free one) a ``prefect server start`` child of this process.
    """
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    timezone = timezone or local_timezone()
    problem = check_schedule(cron, timezone)
    if problem:
        print(f"error: bad schedule: {problem}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if start_server is not None:
            url = stack.enter_context(prefect_server(start_server))
            os.environ["PREFECT_API_URL"] = url  # for the flow-run processes the runner starts
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        url = get_current_settings().api.url
        problem = "PREFECT_API_URL is not set" if not url else server_healthy(url)
        if problem:
            where = f" at {url} ({problem})" if url else f" ({problem})"
            print(f"error: no Prefect server{where}: {HOW_TO_START}", file=sys.stderr)
            return 2
        print(f"serving loupe-nightly from {url}: cron {cron!r} in {timezone}", flush=True)
        nightly.serve(name="nightly", schedules=[Cron(cron, timezone=timezone)], limit=1,
                      parameters={"root": _abs(root), "out": _abs(out), "preset": preset, "device": device,
                                  "state": _abs(state), "ray_address": ray_address})
    return 0
