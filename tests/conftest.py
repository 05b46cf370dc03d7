"""Session-wide fixtures: one Prefect test server, one Ray, one simulated shoot."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="loupe-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def sim_shoot(tmp_path_factory) -> Path:
    """A small simulated shoot (RAW, JPEG and TIFF) plus one unreadable file."""
    from models.simulator import synth_shoot

    shoot = tmp_path_factory.mktemp("shoots") / "sim-shoot"
    synth_shoot(shoot, images=6, seed=11, size=(480, 320))
    (shoot / "X9999_broken.dng").write_bytes(b"not a raw file at all" * 50)
    return shoot


@pytest.fixture(scope="session")
def small_sources_preset(tmp_path_factory) -> Path:
    """The catalog preset with its enlargement bound lifted: the test shoot is 480 px (for speed),
    which the catalog's 2400/3000 px canvases would enlarge ~20x (see test_small_sources_...)."""
    path = tmp_path_factory.mktemp("presets") / "catalog-small.toml"
    text = (Path(__file__).parents[1] / "infra" / "presets" / "catalog.toml").read_text()
    assert 'column = "upscale"\nreason = "low_resolution"\nmax = 8.0' in text
    path.write_text(text.replace('name = "catalog"', 'name = "catalog-small"')
                    .replace('column = "upscale"\nreason = "low_resolution"\nmax = 8.0',
                             'column = "upscale"\nreason = "low_resolution"\nmax = 100.0'))
    return path
