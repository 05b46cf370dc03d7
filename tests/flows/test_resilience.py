"""A run killed with SIGKILL anywhere (driver or worker) loses at most the images in flight: the next run
finishes the job with the manifest an uninterrupted run writes, redoing nothing that had finished.

The kills are real (``infra.failpoints``: the process sends itself SIGKILL at a named point); the runs are
``loupe run`` subprocesses attached to the test session's Prefect server and Ray cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.shoot import run_shoots
from helpers import RUN_TO_RUN, comparable_manifest
from infra.catalog import TERMINAL, Catalog

# driver points, in the order an image meets them; a run killed at each lets the next get further
DRIVER_POINTS = ["run.ingested", "route.recorded", "route.moved", "route.done", "route.review", "run.qa_tables",
                 "run.manifest"]


@pytest.fixture(scope="module")
def shoot(tmp_path_factory) -> Path:
    from models.simulator import synth_shoot

    folder = tmp_path_factory.mktemp("resilience") / "kill-shoot"
    synth_shoot(folder, images=5, seed=18, size=(480, 320))   # two right sweep shots export, three go to review
    (folder / "X9_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


@pytest.fixture(scope="module")
def reference(shoot, small_sources_preset, prefect_server, ray_session, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("reference")
    run_shoots([shoot], out, preset=str(small_sources_preset))
    return comparable_manifest(out)


def _loupe(args: list[str], failpoint: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    """``loupe ...`` attached to this session's Prefect server and Ray (a killed driver leaves them up)."""
    import ray
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "LOUPE_FAILPOINT": failpoint}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _finished(out: Path) -> dict[str, float]:
    return {r["source"]: r["updated_at"] for r in Catalog.open(out / ".state").rows() if r["status"] in TERMINAL}


def test_killed_anywhere_the_next_run_finishes_as_if_never_killed(shoot, reference, small_sources_preset, tmp_path):
    assert {"exported", "review", "rejected"} <= set(reference["status"]), reference["status"]
    out = tmp_path / "out"
    args = ["run", str(shoot), "--out", str(out), "--preset", str(small_sources_preset), "--no-progress"]
    worker_kills = {2: f"worker.start@{tmp_path / 'w1'}", 3: f"worker.staged@{tmp_path / 'w2'}"}
    finished: dict[str, float] = {}
    killed = []
    for i, point in enumerate(DRIVER_POINTS):
        result = _loupe(args, ",".join(filter(None, [point, worker_kills.get(i)])))
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        if result.returncode == -9:
            killed.append(point)
        else:
            assert result.returncode == 0, result.stderr[-3000:]
        now = _finished(out)
        assert {k: now[k] for k in finished} == finished     # what had finished was not redone
        finished = now
    assert len(killed) >= 5, killed
    assert (tmp_path / "w1").exists() and (tmp_path / "w2").exists()    # both workers were killed
    final = _loupe(args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert {k: v for k, v in _finished(out).items() if k in finished} == finished

    got = comparable_manifest(out)
    pd.testing.assert_frame_equal(got.drop(columns=["error"]), reference.drop(columns=["error"]), **RUN_TO_RUN)
    # no orphan or partial file: exports are exactly the manifest's, staging only for images in review
    exported = {p for cell in got["exports"] if cell for p in cell.split(";")}
    assert {str(p.relative_to(out)) for p in (out / "exports").rglob("*") if p.is_file()} == exported
    assert not list(out.rglob("*.part"))
    in_review = set(got.loc[got["status"] == "review", "image_id"])
    assert {p.name for p in (out / ".staging").glob("*/*")} == in_review
    assert {p.name for p in (out / "review").glob("*/*")} == in_review


def test_a_worker_that_keeps_dying_leaves_the_image_retryable_then_the_next_run_takes_it(
        shoot, small_sources_preset, prefect_server, ray_session, tmp_path):
    one = tmp_path / "one-shoot"
    one.mkdir()
    src = next(p for p in sorted(shoot.iterdir()) if p.suffix == ".jpg" and "broken" not in p.name)
    shutil.copy(src, one / src.name)
    out = tmp_path / "out"
    state = f"sqlite:///{tmp_path / 'catalog.sqlite'}"       # and the catalog at a database URL
    args = ["run", str(one), "--out", str(out), "--preset", str(small_sources_preset), "--no-progress",
            "--state", state]
    first = _loupe(args, "worker.start")                    # every attempt's worker is killed
    assert first.returncode == 0, first.stderr[-3000:]
    row = comparable_manifest(out).loc[src.name]
    assert row["status"] == "retryable" and row["reasons"] == "worker_lost", row.to_dict()
    assert "\n" not in row["error"] and "Traceback" not in row["error"]
    assert "1 retryable" in first.stdout and "run the same command again" in first.stdout
    second = _loupe(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert comparable_manifest(out).loc[src.name, "status"] in TERMINAL
    assert (tmp_path / "catalog.sqlite").is_file() and not (out / ".state").exists()


def test_a_second_run_on_the_same_catalog_is_refused_while_the_first_holds_it(shoot, prefect_server, ray_session,
                                                                              tmp_path):
    out = tmp_path / "out"
    lock = Catalog.open(out / ".state").lock()        # this process plays the first run
    try:
        second = _loupe(["run", str(shoot), "--out", str(out), "--no-progress"], timeout=120)
    finally:
        lock.release()
    assert second.returncode == 2
    assert "another run" in second.stderr and "Traceback" not in second.stderr
    assert not (out / "manifest.csv").exists()


def test_a_bug_in_a_worker_is_one_plain_line(ray_session):
    """A Ray task's error carries the remote traceback and terminal colours; the manifest gets one line."""
    import ray

    from flows.retouch import describe_failure

    @ray.remote
    def buggy():
        raise ValueError("boom\nsecond line")

    with pytest.raises(Exception) as err:
        ray.get(buggy.remote())
    line = describe_failure(err.value)
    assert line.startswith("ValueError: boom second line at test_resilience.py:"), line
    assert "\n" not in line and "\x1b" not in line and "Traceback" not in line


def test_docs_scratch_of_a_killed_run_is_removed_by_the_next(tmp_path, monkeypatch):
    """GX's Data Docs folder of a run killed while it held one is swept by the next; a live run's is kept."""
    import tempfile

    from flows.shoot import docs_scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"loupe-gx-{int(gone.stdout)}-abc"
    living = tmp_path / f"loupe-gx-{os.getppid()}-def"
    for folder in (killed, living):
        (folder / "docs").mkdir(parents=True)
    with docs_scratch() as tmp:
        assert Path(tmp).name.startswith(f"loupe-gx-{os.getpid()}-")
        assert not killed.exists() and living.exists()
    assert not Path(tmp).exists()
