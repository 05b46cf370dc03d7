"""Session-wide fixtures: one Prefect test server, one Ray, one simulated shoot."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if "PREFECT_HOME" not in os.environ:   # a throwaway Prefect home, removed when the session ends
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="loupe-test-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
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
    synth_shoot(shoot, images=6, seed=18, size=(480, 320))   # sweeps (two right), papers, a desk
    (shoot / "X9999_broken.dng").write_bytes(b"not a raw file at all" * 50)
    return shoot


@pytest.fixture(scope="session")
def small_sources_preset(tmp_path_factory) -> Path:
    """The catalog preset with its two bounds on the frame's resolution lifted: the test shoot is 480 px
    (for speed), which the catalog's 2400/3000 px canvases would enlarge ~20x (see test_small_sources_...),
    and at which a ring's outline is 2.5x the share of its pixels it is at 1200 px (``fine_outline``: a
    right pave ring there reads 0.11). The catalog holds such a source as ``low_resolution`` anyway."""
    path = tmp_path_factory.mktemp("presets") / "catalog-small.toml"
    text = (Path(__file__).parents[1] / "infra" / "presets" / "catalog.toml").read_text()
    bounds = {'column = "upscale"\nreason = "low_resolution"\nmax = 8.0': "max = 100.0",
              'column = "outline_share"\nreason = "fine_outline"\nmax = 0.1': "max = 1.0"}
    text = text.replace('name = "catalog"', 'name = "catalog-small"')
    for rule, lifted in bounds.items():
        assert rule in text, rule
        text = text.replace(rule, rule.rsplit("\n", 1)[0] + "\n" + lifted)
    path.write_text(text)
    return path


class MotoS3:
    """moto's threaded S3 server on loopback: a real HTTP S3 endpoint for the real ``minio`` client."""

    def __init__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"LOUPE_S3_ENDPOINT": self.endpoint, "LOUPE_S3_ACCESS_KEY": "test-access-key",
                    "LOUPE_S3_SECRET_KEY": "test-secret-key-do-not-log"}
        self.server = None

    def start(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # a line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        """An outage: the port refuses connections until ``start`` (moto keeps the buckets in memory)."""
        self.server.stop()
        self.server._server.server_close()

    def client(self):
        from minio import Minio

        return Minio(f"127.0.0.1:{self.port}", access_key="test-access-key", secret_key="test-secret-key-do-not-log",
                     secure=False)


@pytest.fixture(scope="session")
def s3():
    server = MotoS3()
    server.start()
    server.client().make_bucket("loupe")
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.stop()
