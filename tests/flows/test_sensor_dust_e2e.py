"""End to end: a simulated shoot with sensor dust through the Prefect flow and Ray."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.shoot import RunConfig, ingest, plan_shoots, run_shoots, survey_sensor_dust
from infra.catalog import Catalog
from infra.layout import Layout
from infra.storage import Location
from infra.presets import load_preset
from infra.shoots import read_shoot
from models.simulator import synth_shoot


@pytest.fixture(scope="module")
def dusty_run(prefect_server, ray_session, tmp_path_factory):
    shoot = tmp_path_factory.mktemp("shoots") / "dusty-shoot"
    synth_shoot(shoot, images=6, seed=2, size=(384, 256), sensor_dust=4)
    out = tmp_path_factory.mktemp("out")
    counts = run_shoots([shoot], out)
    return shoot, out, counts


def test_every_frame_gets_the_shoots_sensor_dust_corrected(dusty_run):
    shoot, out, counts = dusty_run
    df = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(df) == 6 and (df["status"] != "rejected").all(), df[["source", "status", "error"]]
    assert "sensor_dust_spots" in df.columns
    assert (df["sensor_dust_spots"].astype(float) >= 3).all(), df["sensor_dust_spots"]
    assert df["sensor_dust_spots"].nunique() == 1          # one survey for the whole shoot
    catalog = Catalog.open(out / ".state")
    n = int(float(df["sensor_dust_spots"].iloc[0]))
    for source in df["source"]:
        assert f"sensor dust: {n} spots corrected" in catalog.get(shoot.name, source)["notes"]


def test_the_survey_can_be_turned_off_per_shoot(dusty_run, tmp_path):
    shoot, _, _ = dusty_run
    config = RunConfig(out=Location.of(tmp_path), state=str(tmp_path / ".state"))
    catalog = Catalog.open(config.state)
    preset = load_preset("catalog")
    jobs = ingest.fn(plan_shoots([shoot], "catalog")[0], catalog, Layout.of(tmp_path)).jobs
    assert len(jobs) == 6
    spots = survey_sensor_dust.fn(read_shoot(shoot), jobs, preset, config)
    assert set(spots) == {j.source.image_id for j in jobs} and all(len(s) >= 3 for s in spots.values())
    off = preset.model_copy(update={"stages": {"sensor_dust": {"enabled": False}}})
    assert survey_sensor_dust.fn(read_shoot(shoot), jobs, off, config) == {}
    assert survey_sensor_dust.fn(read_shoot(shoot), jobs[:2], preset, config).keys() == {
        j.source.image_id for j in jobs[:2]}               # only the frames to process, from the whole shoot
