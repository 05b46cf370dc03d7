"""End to end: a simulated shoot through the Prefect flow and Ray, twice."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from flows.shoot import run_shoots
from infra.presets import load_preset

STATUSES = {"exported", "review", "rejected"}


@pytest.fixture(scope="module")
def first_run(sim_shoot, small_sources_preset, prefect_server, ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    counts = run_shoots([sim_shoot], out, preset=str(small_sources_preset))
    return out, counts


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", keep_default_na=False)


def test_one_row_per_source_with_terminal_status(sim_shoot, first_run):
    out, counts = first_run
    df = _manifest(out)
    sources = sorted(p.name for p in sim_shoot.iterdir() if p.is_file())
    assert sorted(df["source"]) == sources
    assert set(df["status"]) <= STATUSES
    assert counts["exported"] + counts["review"] + counts["rejected"] == len(sources)
    for col in ("shoot", "source", "image_id", "sku", "view", "status", "reasons", "delta_e_mean", "delta_e_p95",
                "detail_retention", "edge_recall", "mask_coverage", "seconds", "exports"):
        assert col in df.columns


def test_unreadable_file_is_rejected_with_reason(first_run):
    out, _ = first_run
    row = _manifest(out).set_index("source").loc["X9999_broken.dng"]
    assert row["status"] == "rejected"
    assert row["reasons"] == "unreadable"
    assert row["error"].startswith("unreadable:")


def _cutout_right(out: Path, shoot: Path, source: str) -> bool:
    """The image's cut-out export (published or staged) is right by the trust bench's bar: IoU >= 0.95
    against the simulator's truth, holes open, thin parts kept, no piece cut out as a hole."""
    from bench.trust import RIGHT, grade_image
    from infra.catalog import Catalog
    from models.simulator import load_truth

    row = Catalog.open(out / ".state").get(shoot.name, source)
    exports, staged = json.loads(row["exports"] or "{}"), json.loads(row["staged"] or "{}")
    grades = grade_image(out / (exports["cutout"] if "cutout" in exports else staged["cutout"]),
                         load_truth(shoot, Path(source).stem), None)
    return (all(grades[k] >= RIGHT[k][1] for k in ("iou", "holes", "thin"))
            and grades["pierced"] <= RIGHT["pierced"][1])


def test_clean_studio_sweeps_pass_qa_and_clutter_is_flagged(sim_shoot, first_run):
    """A sweep shot whose cut-out is right (the trust bench's bar) must export: QA's evidence raises no
    false alarm on it. One that is wrong may be held for review. On a wooden desk there is no white
    reference for the colour: a person must see it."""
    out, _ = first_run
    df = _manifest(out).set_index("source")
    right = 0
    for src in df.index:
        meta_file = sim_shoot / "truth" / Path(src).stem / "meta.json"
        if not meta_file.exists():
            continue
        background = json.loads(meta_file.read_text())["background"]
        if background in ("white_sweep", "grey_sweep") and _cutout_right(out, sim_shoot, src):
            right += 1
            assert df.loc[src, "status"] == "exported", (src, df.loc[src, "reasons"])
        if background == "textured_desk":
            assert df.loc[src, "status"] == "review" and "color_cast" in df.loc[src, "reasons"]
    assert right >= 1


def test_small_sources_are_not_enlarged_silently(first_run):
    """The catalog preset's own rules send a 480 px source whose piece its 3000 px zoom canvas
    would enlarge more than 8x to review as ``low_resolution``, and no other."""
    from qa.suite import Rule, run_suite

    out, _ = first_run
    metrics = pd.read_csv(out / "qa" / "sim-shoot" / "metrics.csv").set_index("image_id", drop=False)
    assert (metrics["upscale"] > 8).any() and (metrics["upscale"] > 2).all()
    rules = [Rule(**r.model_dump()) for r in load_preset("catalog").qa]
    verdicts = run_suite(metrics.drop(columns=["reasons"]), rules, suite_name="catalog").reasons
    for image_id, codes in verdicts.items():
        assert ("low_resolution" in codes) == (metrics.loc[image_id, "upscale"] > 8), (image_id, codes)


def test_exports_have_preset_sizes_formats_and_icc(sim_shoot, first_run):
    out, _ = first_run
    preset = load_preset("catalog")
    df = _manifest(out)
    exported = df[df["status"] == "exported"]
    assert len(exported)
    for _, row in exported.iterrows():
        files = {Path(p).name.rsplit("_", 1)[1].split(".")[0]: out / p for p in row["exports"].split(";")}
        assert set(files) == {e.name for e in preset.exports}
        src_size = Image.open(sim_shoot / "truth" / Path(row["source"]).stem / "alpha.png").size
        for spec in preset.exports:
            path = files[spec.name]
            assert path.name == f"{row['sku']}_{row['view']}_{spec.name}.{path.suffix[1:]}"
            if spec.format == "tiff":
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    assert page.dtype == np.uint16 and page.shape[:2] == src_size[::-1]
                    assert 34675 in page.tags  # ICC profile tag
                continue
            im = Image.open(path)
            assert im.format == {"jpeg": "JPEG", "png": "PNG"}[spec.format]
            assert im.info.get("icc_profile"), f"{path.name} has no ICC profile"
            if spec.grid == "canvas":
                assert im.size == (spec.long_edge, spec.long_edge)
                px = np.asarray(im.convert("RGB"))
                assert (px[0, 0] == 255).all() and (px[-1, -1] == 255).all()
            else:
                assert im.size == src_size
            if spec.alpha:
                assert im.mode == "RGBA"
                a = np.asarray(im)[..., 3]
                assert a.min() == 0 and a.max() == 255


def test_white_background_is_exact(first_run):
    """Outside the piece the main image is exactly (255, 255, 255)."""
    out, _ = first_run
    df = _manifest(out)
    row = df[df["status"] == "exported"].iloc[0]
    main = next(out / p for p in row["exports"].split(";") if "_main." in p)
    px = np.asarray(Image.open(main).convert("RGB")).astype(int)
    border = np.concatenate([px[:50].reshape(-1, 3), px[-50:].reshape(-1, 3)])
    assert (border == 255).all()


def test_qa_outputs_written(sim_shoot, first_run):
    out, _ = first_run
    qa = out / "qa" / sim_shoot.name
    assert (qa / "metrics.csv").exists()
    assert json.loads((qa / "validation.json").read_text())["results"]
    assert (qa / "docs" / "index.html").exists()
    assert "Loupe QA report" in (out / "report.html").read_text()


def test_report_has_counts_plots_thumbnails_and_review_links(sim_shoot, first_run):
    out, _ = first_run
    page = (out / "report.html").read_text()
    df = _manifest(out)
    ok = df[df["status"] != "rejected"]
    # every processed image has a before/after thumbnail pair that the page shows
    for _, row in ok.iterrows():
        for k in ("before", "after"):
            thumb = out / "qa" / row["shoot"] / "thumbs" / row["image_id"] / f"{k}.jpg"
            assert thumb.exists() and max(Image.open(thumb).size) <= 240
            assert str(thumb.relative_to(out)) in page
    # one histogram per QA-ruled metric, with the thresholds drawn
    assert page.count("<svg") >= 5 and "stroke=\"#c00\"" in page
    for _, row in df[df["status"] == "review"].iterrows():
        assert f"/image/{row['image_id']}" in page
    assert f"<td>{len(df)}</td>" in page


def test_second_run_reprocesses_nothing(sim_shoot, first_run, small_sources_preset):
    out, _ = first_run
    before = sqlite3.connect(out / ".state" / "catalog.sqlite").execute(
        "select source, updated_at from images order by source").fetchall()
    counts = run_shoots([sim_shoot], out, preset=str(small_sources_preset))
    assert counts["skipped"] == len([p for p in sim_shoot.iterdir() if p.is_file()])
    assert counts["exported"] == counts["review"] == counts["rejected"] == 0
    after = sqlite3.connect(out / ".state" / "catalog.sqlite").execute(
        "select source, updated_at from images order by source").fetchall()
    assert before == after
    assert len(_manifest(out)) == len(before)


def test_changed_preset_reprocesses(sim_shoot, first_run, tmp_path):
    out, _ = first_run
    preset = tmp_path / "thin.toml"
    preset.write_text(Path("infra/presets/catalog.toml").read_text().replace('name = "catalog"', 'name = "thin"')
                      .replace("quality = 88", "quality = 80"))
    exported_before = set(_manifest(out).query("status == 'exported'")["source"])
    counts = run_shoots([sim_shoot], out, preset=str(preset))
    assert counts["skipped"] == 0
    manifest = _manifest(out)
    assert len(manifest) == len([p for p in sim_shoot.iterdir() if p.is_file()])
    # the catalog's 8x enlargement bound holds these 480 px sources now: what the first run published
    # is withdrawn, so the exports folder holds exactly what the manifest calls exported
    assert exported_before and counts["exported"] < len(exported_before)
    on_disk = {str(p.relative_to(out)) for p in (out / "exports").rglob("*") if p.is_file()}
    listed = {e for row in manifest.query("status == 'exported'")["exports"] for e in row.split(";") if e}
    assert on_disk == listed


def test_reviewer_approve_and_reject_from_cli(first_run, capsys, monkeypatch, tmp_path):
    from flows.cli import main

    out, _ = first_run
    monkeypatch.chdir(tmp_path)      # a reviewer's shell is anywhere: staged paths are relative to OUT
    assert main(["review", "list", "--out", str(out)]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    df = _manifest(out).set_index("image_id")
    assert sorted(listed) == sorted(df.index[df["status"] == "review"])
    if len(listed) < 2:
        pytest.skip("needs two flagged images")
    assert main(["review", "approve", listed[0], "--out", str(out), "--who", "qa1"]) == 0
    assert main(["review", "reject", listed[1], "--out", str(out), "--note", "scratched stone"]) == 0
    df = _manifest(out).set_index("image_id")
    assert df.loc[listed[0], "status"] == "exported"
    assert all((out / p).exists() for p in df.loc[listed[0], "exports"].split(";"))
    assert df.loc[listed[1], "status"] == "rejected" and "reviewer_rejected" in df.loc[listed[1], "reasons"]
    assert main(["review", "approve", listed[1], "--out", str(out)]) == 2
    assert "not waiting for review" in capsys.readouterr().err
