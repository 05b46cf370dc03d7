"""End to end on object storage: ``loupe run s3://... --out s3://...`` against moto's S3 server with the real
minio client, the workers reading and writing through it (no shared folder), through a 10 s outage."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from infra.catalog import TERMINAL, Catalog


@pytest.fixture(scope="module", autouse=True)
def state_home(tmp_path_factory):
    """Where the catalog of an s3:// OUT lives (a local database), shared by the tests of this module."""
    home = tmp_path_factory.mktemp("state-home")
    saved = os.environ.get("LOUPE_STATE_HOME")
    os.environ["LOUPE_STATE_HOME"] = str(home)
    yield home
    os.environ.pop("LOUPE_STATE_HOME") if saved is None else os.environ.__setitem__("LOUPE_STATE_HOME", saved)


@pytest.fixture(scope="module")
def s3_shoot(s3, tmp_path_factory):
    from models.simulator import synth_shoot

    local = tmp_path_factory.mktemp("s3-src") / "s3-shoot"
    synth_shoot(local, images=5, seed=18, size=(480, 320))   # the seed the kill test uses: both exports and review
    (local / "X9_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    client = s3.client()
    for path in sorted(local.iterdir()):
        if path.is_file():
            client.fput_object("loupe", f"shoots/s3-shoot/{path.name}", str(path))
    return sorted(p.name for p in local.iterdir() if p.is_file())


def test_a_run_from_s3_to_s3_survives_a_storage_outage(s3, s3_shoot, small_sources_preset, prefect_server,
                                                       ray_session, state_home):
    import ray
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, **s3.env, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "s3://loupe/shoots/s3-shoot",
                            "--out", "s3://loupe/out", "--preset", str(small_sources_preset), "--no-progress"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    catalog_dir = state_home / "loupe" / "out"
    outage = []

    def outage_after_the_first_image():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and run.poll() is None:
            if (catalog_dir / "catalog.sqlite").exists() and any(
                    r["status"] in TERMINAL for r in Catalog.open(catalog_dir).rows()):
                s3.stop()
                time.sleep(10)
                s3.start()
                outage.append(run.poll() is None)     # the run was still going when storage came back
                return
            time.sleep(0.2)

    cut = threading.Thread(target=outage_after_the_first_image)
    cut.start()
    try:
        out, err = run.communicate(timeout=400)
    finally:
        cut.join()
    assert run.returncode == 0, err[-3000:]
    assert outage == [True]
    assert "Traceback" not in err and "test-secret-key" not in out + err

    client = s3.client()
    manifest = pd.read_csv(io.BytesIO(client.get_object("loupe", "out/manifest.csv").read()), keep_default_na=False)
    assert sorted(manifest["source"]) == s3_shoot                       # nothing lost
    assert set(manifest["status"]) <= set(TERMINAL)
    assert manifest.set_index("source").loc["X9_broken.jpg", "reasons"] == "unreadable"
    objects = {o.object_name for o in client.list_objects("loupe", prefix="out/", recursive=True)}
    exported = {f"out/{p}" for cell in manifest["exports"] if cell for p in cell.split(";")}
    assert exported and {o for o in objects if o.startswith("out/exports/")} == exported
    in_review = set(manifest.loc[manifest["status"] == "review", "image_id"])
    assert {o.split("/")[3] for o in objects if o.startswith("out/review/")} == in_review
    assert {o.split("/")[3] for o in objects if o.startswith("out/.staging/")} == in_review
    assert "out/report.html" in objects and any(o.startswith("out/qa/s3-shoot/docs/") for o in objects)
    assert not os.path.exists("s3:")                                     # nothing written to a mangled local path


def test_review_works_on_an_s3_out(s3, s3_shoot, tmp_path):
    """After the run above: the review app serves a queued image's previews and full-resolution tiles
    from S3, and an approval publishes its exports there (server-side copy) and clears its staging."""
    from fastapi.testclient import TestClient

    from flows.review import approve
    from infra.layout import default_state
    from infra.reviewapp.app import create_app

    state = default_state("s3://loupe/out")
    catalog = Catalog.open(state)
    queued = catalog.queue("open")
    if not queued:
        pytest.skip("the run above put nothing in the review queue")
    image_id = queued[0]["image_id"]
    web = TestClient(create_app(state, "s3://loupe/out", who="tester"), base_url="http://127.0.0.1:8765")
    after = web.get(f"/img/{image_id}/after")
    assert after.status_code == 200 and after.headers["content-type"] == "image/jpeg" and after.content[:2] == b"\xff\xd8"
    assert web.get(f"/img/{image_id}/mask").status_code == 200
    page = web.get(f"/image/{image_id}")
    assert page.status_code == 200 and "data-version" in page.text
    assert web.get(f"/img/{image_id}/tile/0/0/0.png").content[:4] == b"\x89PNG"

    exports = approve(state, "s3://loupe/out", image_id, who="tester")
    objects = {o.object_name for o in s3.client().list_objects("loupe", prefix="out/", recursive=True)}
    assert {f"out/{p}" for p in exports.values()} <= objects
    assert not any(o.startswith(f"out/.staging/s3-shoot/{image_id}/") for o in objects)
    assert catalog.by_image_id(image_id)["status"] == "exported"
