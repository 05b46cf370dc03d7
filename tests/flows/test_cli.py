"""The command line: argument handling and the commands that need no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser, main


def test_version_answers_without_heavy_imports():
    out = subprocess.run([sys.executable, "-c", "import sys; from flows.cli import main; "
                          "rc = None\ntry: main(['--version'])\nexcept SystemExit as e: rc = e.code\n"
                          "print(rc, 'torch' in sys.modules, 'prefect' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "False", "False"]


ENDING = """
import atexit, gc, sys
import ray
from flows import cli
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
cli.main = lambda: 3
atexit.register(lambda: print("after", gc.get_freeze_count() > 0, ray.is_initialized()))
cli.entry()
"""


def test_the_command_ends_its_process_without_the_last_collection():
    """``entry`` passes ``main``'s code on, shuts Ray down itself and freezes the garbage collector, so
    the interpreter's last collection (seconds over Prefect's, GX's and torch's objects) is skipped;
    exit hooks registered before still run after it."""
    out = subprocess.run([sys.executable, "-c", ENDING], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["after", "True", "False"]


def test_synth_writes_a_shoot(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--images", "3", "--seed", "2", "--size", "320x240"]) == 0
    files = sorted(p.suffix for p in (tmp_path / "s").iterdir() if p.is_file())
    assert files == [".dng", ".jpg", ".tif"]
    assert len(list((tmp_path / "s" / "truth").iterdir())) == 3


def test_bad_size_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["synth", "x", "--size", "big"])
    assert "WIDTHxHEIGHT" in build_parser().format_help() or "1536x1024" in capsys.readouterr().err


def test_run_refuses_missing_folder(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a shoot folder" in capsys.readouterr().err


def test_review_needs_an_id(tmp_path, capsys):
    assert main(["review", "approve", "--out", str(tmp_path)]) == 2


def test_dry_run_says_what_would_happen_and_why_without_writing(tmp_path, capsys):
    shoot = tmp_path / "s"
    assert main(["synth", str(shoot), "--images", "2", "--seed", "2", "--size", "320x240"]) == 0
    (shoot / "L1_front.jpg").symlink_to("/etc/passwd")
    capsys.readouterr()
    assert main(["run", str(shoot), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("process ") for line in lines) == 2
    assert any(line.startswith("reject ") and "L1_front.jpg" in line and "symlink" in line for line in lines)
    assert any(line.startswith("ignore ") and "truth/" in line for line in lines)
    assert not (tmp_path / "o").exists()


def test_operator_errors_are_one_line_and_refused_before_any_work(tmp_path, capsys):
    shoot = tmp_path / "s"
    shoot.mkdir()
    (tmp_path / "a-file").write_text("x")
    assert main(["run", str(shoot), "--out", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to ") and "a-file" in err and "Traceback" not in err
    assert main(["run", str(shoot), "--out", str(tmp_path / "o"), "--preset", "catalgo"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'catalgo'" in err and "Traceback" not in err


def test_cuda_asked_for_without_a_gpu_is_refused_at_once(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    shoot = tmp_path / "s"
    shoot.mkdir()
    assert main(["run", str(shoot), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "no usable CUDA GPU" in capsys.readouterr().err


def test_state_takes_a_database_url(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'db' / 'catalog.sqlite'}"
    (tmp_path / "db").mkdir()
    assert build_parser().parse_args(["run", "x", "--out", "o", "--state", "postgresql+psycopg://h/loupe"]).state \
        == "postgresql+psycopg://h/loupe"
    assert main(["report", str(tmp_path / "o"), "--state", url]) == 0
    assert (tmp_path / "db" / "catalog.sqlite").is_file() and (tmp_path / "o" / "manifest.csv").is_file()


def test_a_sidecar_broken_after_a_run_keeps_what_was_finished(tmp_path):
    from flows.shoot import decide, plan_shoots
    from infra.shoots import hashed, list_shoot

    shoot = tmp_path / "s"
    assert main(["synth", str(shoot), "--images", "2", "--seed", "2", "--size", "320x240"]) == 0
    (shoot / "shoot.toml").write_text("[stages.dust]\nstrenght = 1\n")
    plan = plan_shoots([shoot], "catalog")[0]
    assert plan.preset is None and "strenght" in plan.problems[0]
    done, new = hashed(list_shoot(shoot)).sources
    exported = {"sha256": done.sha256, "status": "exported", "reasons": "", "preset_digest": "d"}
    assert decide(done, exported, plan, None)[0] == "skip"                 # its exports stay published
    assert decide(new, None, plan, None)[:2] == ("reject", "bad_config")   # a new file waits for a good sidecar
    assert decide(new, {**exported, "sha256": "other"}, plan, None)[:2] == ("reject", "bad_config")


ABANDONED_SERVER = """
import time
from flows.cli import _boot_prefect, quiet_env
quiet_env()
server = _boot_prefect()
with server.serving():
    print(server.process.pid, flush=True)
    time.sleep(600)
"""


def _serving(pid: int) -> bool:
    """The process runs (a zombie, dead and waiting to be reaped by whoever adopted it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_temporary_prefect_server_goes_when_the_command_is_killed(tmp_path):
    """A command killed outright (SIGKILL, the OOM killer) runs no exit handler: the server it started must
    not be left serving behind it."""
    import os
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path)
    command = subprocess.Popen([sys.executable, "-c", ABANDONED_SERVER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        server = int(command.stdout.readline())
        assert _serving(server)
        os.kill(command.pid, signal.SIGKILL)
        command.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _serving(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _serving(server)
    finally:
        command.kill()
        if "server" in locals() and _serving(server):
            os.kill(server, signal.SIGKILL)     # not left behind by a failing test either


TEMPORARY_SERVER = """
import sys
from flows.cli import _boot_prefect, quiet_env
quiet_env()
server = _boot_prefect()
from prefect import flow
from prefect.client.orchestration import get_client

@flow
def hello():
    return 42

with server.serving():
    assert hello() == 42
    with get_client(sync_client=True) as client:
        print("runs", len(client.read_flow_runs()), client.api_url)
print("port", server.port, "pid", server.process.pid, "imported", "prefect.server.api.server" in sys.modules)
"""


def test_the_temporary_prefect_server_runs_apart_and_stops_with_the_command(tmp_path):
    """Without PREFECT_API_URL a run starts Prefect's temporary server in a process of its own, without importing
    Prefect's server package in the command's process (2.4-3 s before Ray could start), runs its flow there,
    and stops it when the command ends."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", TEMPORARY_SERVER], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    _, count, api_url = lines[-2].split()
    _, port, _, pid, _, imported = lines[-1].split()
    assert count == "1" and api_url == f"http://127.0.0.1:{port}/api/" and imported == "False"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)     # gone with the command (reaped by it, so not even a zombie)
