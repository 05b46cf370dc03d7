"""End to end: a simulated shoot with sensor dust through the Prefect flow and Ray."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.shoot import _AHEAD, Retouchers, retouchers_ahead, run_shoots, survey_sensor_dust
from infra.catalog import Catalog
from infra.presets import load_preset
from infra.shoots import Identities, list_shoot
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


def test_the_survey_runs_on_the_runs_actors_and_can_be_turned_off_per_shoot(dusty_run):
    shoot, _, _ = dusty_run
    preset = load_preset("catalog")
    off = preset.model_copy(update={"stages": {"sensor_dust": {"enabled": False}}})
    few = preset.model_copy(update={"stages": {"sensor_dust": {"survey_frames": 4}}})
    listed = list_shoot(shoot)
    with Retouchers(None, "auto") as workers, Identities(listed.sources, ahead=0) as identities:
        found = survey_sensor_dust.fn(listed, preset, workers.grow(2), identities)
        assert len(workers.actors) == 2
        assert list(found) == [(256, 384)] and len(found[(256, 384)]) >= 3     # one shape: 384x256 frames
        assert survey_sensor_dust.fn(listed, off, workers, identities) == {}
        sample = survey_sensor_dust.fn(listed, few, workers, identities)[(256, 384)]   # 4 of the 6 frames
    assert sample and all(any(abs(s.x - t.x) + abs(s.y - t.y) < 0.01 for t in found[(256, 384)]) for s in sample)
    assert workers.actors == []                            # closed with the run


def test_a_survey_past_max_spots_corrects_none_and_says_why(dusty_run, capfd):
    """More spots than a sensor casts is the backdrop's texture: none is corrected, and the operator
    reads why in a line (not a silently untouched dusty sensor)."""
    shoot, _, _ = dusty_run
    preset = load_preset("catalog")
    strict = preset.model_copy(update={"stages": {"sensor_dust": {"max_spots": 1}}})
    listed = list_shoot(shoot)
    with Retouchers(None, "auto") as workers, Identities(listed.sources, ahead=0) as identities:
        assert survey_sensor_dust.fn(listed, strict, workers.grow(2), identities) == {}
    said = capfd.readouterr().err
    line = f"shoot {listed.shoot_id}: sensor dust (384x256 evidence): more than 1 spots (max_spots) stay put"
    assert line in said, said


def test_a_run_takes_over_the_actors_started_ahead_of_it_on_its_cluster_and_device(dusty_run):
    """`loupe run` starts the actors while Prefect's server boots; the flow must use those, not start
    its own (and close them at its end), and must leave a set started for another device alone."""
    shoot, out, _ = dusty_run
    with retouchers_ahead([shoot], None, "auto") as ahead:
        assert len(ahead.actors) == 2                       # 6 sources, 2 CPUs in the test cluster
        assert run_shoots([shoot], out)["skipped"] == 6     # finished already: nothing to retouch
        assert ahead.actors == []                           # the flow took them over and closed them
    with retouchers_ahead([shoot], None, "cpu") as ahead:
        run_shoots([shoot], out, device="auto")
        assert len(ahead.actors) == 2                       # not the run's: kept for whoever started them
    assert ahead.actors == [] and _AHEAD == []
