"""Hostile input through the whole flow: every file ends in exactly one terminal state with one clear
line, bombs are refused from their header, links are not followed, names cannot collide, a broken
``shoot.toml`` costs only its own shoot, and no worker grows past 3 GB."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flows.shoot import run_shoots
from hostile import EXIF_ROTATED, is_upright, make_hostile_shoot

TERMINAL = {"exported", "review", "rejected"}


@pytest.fixture(scope="module")
def hostile_run(small_sources_preset, prefect_server, ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    shoot = root / "hostile-shoot"
    shoot.mkdir()
    expected = make_hostile_shoot(shoot)
    outside = root / "outside.jpg"
    shutil.copy(shoot / "CMYK01_front.jpg", outside)
    os.symlink("/etc/passwd", shoot / "L1_front.jpg")
    os.symlink(outside, shoot / "L2_front.jpg")
    (shoot / "old").mkdir()
    shutil.copy(shoot / "CMYK01_front.jpg", shoot / "old" / "Q1_front.jpg")   # a subfolder: not a source
    shutil.copy(shoot / "CMYK01_front.jpg", shoot / ".Q2_front.jpg")          # hidden: not a source
    shutil.copy(shoot / "CMYK01_front.jpg", shoot / "D1_front.jpg")           # same content twice
    rgb = np.asarray(Image.open(shoot / "PNGRGBA01_front.png").convert("RGB"))
    Image.fromarray(rgb).save(shoot / "X1_front.png")                         # X1_front / X1_front-2 collide
    Image.fromarray(rgb[:, ::-1].copy()).save(shoot / "X1_front.jpg", quality=95)
    Image.fromarray(rgb[::-1].copy()).save(shoot / "X1_front-2.jpg", quality=95)
    expected.update({"L1_front.jpg": "symlink", "L2_front.jpg": "symlink", "D1_front.jpg": "duplicate",
                     "X1_front.png": "ok", "X1_front.jpg": "ok", "X1_front-2.jpg": "ok"})
    broken = root / "broken-shoot"
    broken.mkdir()
    shutil.copy(shoot / "CMYK01_front.jpg", broken / "B1_front.jpg")
    (broken / "shoot.toml").write_text('preset = "catalog"\n[stages.dust\nstrength = 0.5\n')
    out = root / "out"
    counts = run_shoots([shoot, broken], out, preset=str(small_sources_preset))
    df = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    return shoot, out, expected, counts, df


def test_count_in_equals_count_out_each_in_one_terminal_state(hostile_run):
    shoot, _, expected, counts, df = hostile_run
    assert sorted(df.loc[df["shoot"] == shoot.name, "source"]) == sorted(expected)
    assert list(df.loc[df["shoot"] == "broken-shoot", "source"]) == ["B1_front.jpg"]
    assert set(df["status"]) <= TERMINAL
    assert counts["config_errors"] == 1


def test_each_file_gets_the_outcome_it_deserves(hostile_run):
    _, _, expected, _, df = hostile_run
    rows = df.set_index("source")
    for name, kind in expected.items():
        row = rows.loc[name]
        if kind == "ok":
            assert row["status"] in ("exported", "review"), (name, row["error"])
        else:
            assert row["status"] == "rejected" and row["reasons"] == kind, (name, row["reasons"], row["error"])
    assert "points to /etc/passwd" in rows.loc["L1_front.jpg", "error"]
    assert "pixel budget" in rows.loc["BOMB03_front.jpg", "error"]


def test_no_traceback_or_terminal_codes_in_the_manifest(hostile_run):
    *_, df = hostile_run
    for column in ("reasons", "error", "exports"):
        for cell in df[column]:
            assert "\n" not in cell and "Traceback" not in cell and "\x1b" not in cell, cell
            assert len(cell) < 600, cell


def test_no_two_rows_share_an_export_name(hostile_run):
    shoot, out, _, _, df = hostile_run
    names = [(r["sku"], r["view"]) for _, r in df[df["shoot"] == shoot.name].iterrows()]
    x1 = sorted(v for s, v in names if s == "X1")
    assert x1 == ["front", "front-2", "front-3"], x1
    exports = [p for cell in df["exports"] if cell for p in cell.split(";")]
    assert len(exports) == len(set(exports))
    assert all(re.fullmatch(r"[\w.\-/]+", p) for p in exports), exports      # no ';', ',' or spaces in names


def test_a_broken_sidecar_rejects_its_own_shoot_naming_the_file_and_line(hostile_run):
    *_, df = hostile_run
    row = df.set_index("source").loc["B1_front.jpg"]
    assert row["status"] == "rejected" and row["reasons"] == "bad_config"
    assert "broken-shoot/shoot.toml" in row["error"] and "line 2" in row["error"], row["error"]


def test_exif_rotated_sources_come_out_upright(hostile_run):
    shoot, out, _, _, df = hostile_run
    rows = df.set_index("source")
    for name in EXIF_ROTATED:
        before = out / "qa" / shoot.name / "thumbs" / rows.loc[name, "image_id"] / "before.jpg"
        assert is_upright(np.asarray(Image.open(before).convert("RGB"), np.float32) / 255), name


def test_no_worker_grew_past_3_gb(hostile_run):
    *_, df = hostile_run
    peaks = pd.to_numeric(df["worker_peak_mb"], errors="coerce").dropna()
    assert len(peaks) >= 10 and peaks.max() < 3000, peaks.max()
