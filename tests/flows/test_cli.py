"""The command line: argument handling and the commands that need no server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import build_parser, main


def test_version_answers_without_heavy_imports():
    out = subprocess.run([sys.executable, "-c", "import sys; from flows.cli import main; "
                          "rc = None\ntry: main(['--version'])\nexcept SystemExit as e: rc = e.code\n"
                          "print(rc, 'torch' in sys.modules, 'prefect' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "False", "False"]


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
