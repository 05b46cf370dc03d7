"""`loupe serve` against a real `prefect server start`: the server's scheduler creates the run, serve runs it.

Everything here runs in child processes with their own PREFECT_HOME and PREFECT_API_URL, apart from the
session's test harness. One cron minute has to pass, so the real-server test takes one to two minutes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from flows.nightly import stop

REPO = Path(__file__).resolve().parents[2]
FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RAY_ADDRESS"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO",
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="3",
               PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="2",
               PREFECT_RUNNER_POLL_FREQUENCY="2")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _loupe(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def test_serve_without_server_says_how_to_start_one(tmp_path):
    t0 = time.monotonic()
    r = subprocess.run(_loupe("serve", "--watch", str(tmp_path), "--out", str(tmp_path / "out")), cwd=REPO,
                       env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert time.monotonic() - t0 < 30
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "PREFECT_API_URL" in lines[0] and "prefect server start" in lines[0], r.stderr


def test_serve_rejects_bad_zone_and_cron(tmp_path):
    r = subprocess.run(_loupe("serve", "--watch", str(tmp_path), "--out", str(tmp_path / "out"),
                              "--cron", "0 25 * * *", "--timezone", "Europe/Atlantis"),
                       cwd=REPO, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Invalid cron string" in r.stderr and "Europe/Atlantis" in r.stderr


def test_scheduler_creates_a_run_that_serve_completes(tmp_path):
    from models.simulator import synth_shoot

    root, out, home = tmp_path / "root", tmp_path / "out", tmp_path / "home"
    synth_shoot(root / "shoot-a", images=1, seed=3, size=(320, 240))
    sources = sorted(p.name for p in (root / "shoot-a").iterdir() if p.is_file())
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = serve = None
    try:
        with server_log.open("wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                       "--port", str(port)], env=_env(home), cwd=tmp_path, stdout=log,
                                      stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, _tail(server_log)
            time.sleep(0.5)

        with serve_log.open("wb") as log:
            serve = subprocess.Popen(_loupe("serve", "--watch", str(root), "--out", str(out), "--cron", "* * * * *",
                                            "--timezone", "UTC", "--device", "cpu"),
                                     cwd=REPO, env=_env(home, api), stdout=log, stderr=subprocess.STDOUT)
        run, deadline = None, time.monotonic() + 150
        while run is None:
            assert serve.poll() is None, f"loupe serve exited {serve.returncode}:\n{_tail(serve_log)}"
            assert time.monotonic() < deadline, (f"no finished scheduled run\n--- serve:\n{_tail(serve_log)}"
                                                 f"\n--- server:\n{_tail(server_log)}")
            time.sleep(2)
            runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
                "flow_runs": {"state": {"type": {"any_": list(FINISHED)}}}}).json()
            run = next((r for r in runs if r["auto_scheduled"] and r["deployment_id"]), None)

        assert run["state_type"] == "COMPLETED", f"{run['state']}\n{_tail(serve_log)}"
        assert run["parameters"]["root"] == str(root.resolve())
        assert "Can't evaluate bulk DML" not in server_log.read_text(errors="replace")
        df = pd.read_csv(out / "manifest.csv", keep_default_na=False)
        assert sorted(df["source"]) == sources
        assert set(df["status"]) <= {"exported", "review", "rejected"}
    finally:
        stop(serve)
        stop(server)
