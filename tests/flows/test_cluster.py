"""``loupe run`` on a real two-node Ray cluster: images run on both nodes, the results are those of a local run.

The cluster is started with ``ray start`` (a head node and a second node joined by ``--address``, one CPU
each, both on this machine, in a temporary folder of their own: ``bench.cluster.LocalCluster``), and the
run is a ``loupe run`` subprocess attached to it by ``RAY_ADDRESS`` and to the session's Prefect server.
This process never joins that cluster, so the session's own Ray (``ray_session``) is untouched; the
nodes are stopped by killing their own processes, never with ``ray stop`` (which stops every Ray on
the machine). The nodes are started without the driver's ``LOUPE_*`` settings, as on other machines:
that a worker acts on one proves the driver forwards them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cluster import LocalCluster, ray_env
from flows.shoot import gpu_actor_plan, local_gpu_memory, run_shoots
from helpers import RUN_TO_RUN, comparable_manifest
from infra.catalog import TERMINAL


@pytest.fixture(scope="module")
def local_run(sim_shoot, small_sources_preset, prefect_server, ray_session, tmp_path_factory) -> Path:
    """The same shoot through the flow in this process, on the session's one-node local Ray."""
    out = tmp_path_factory.mktemp("cluster-reference")
    run_shoots([sim_shoot], out, preset=str(small_sources_preset))
    return out


def test_a_run_on_a_two_node_cluster_uses_both_nodes_and_matches_a_local_run(
        sim_shoot, small_sources_preset, local_run, prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    marker = tmp_path / "worker-saw-loupe-setting"
    out = tmp_path / "out"
    env = {**ray_env(), "PREFECT_API_URL": PREFECT_API_URL.value(),
           # a worker reaching its first image kills itself once (Ray restarts the actor, the image is
           # retried): it can only do so if the driver's LOUPE_* settings reached the cluster's workers
           "LOUPE_FAILPOINT": f"worker.start@{marker}"}
    t0 = time.monotonic()
    with LocalCluster([1, 1], env={k: v for k, v in env.items() if k != "LOUPE_FAILPOINT"}) as cluster:
        assert len(cluster.node_ids) == 2
        started = time.monotonic() - t0
        result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(sim_shoot), "--out", str(out),
                                 "--preset", str(small_sources_preset), "--no-progress"],
                                env={**env, "RAY_ADDRESS": cluster.address}, capture_output=True, text=True,
                                timeout=240)
        logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(cluster.temp_dir.glob("node*.log")))
    assert result.returncode == 0, result.stderr[-4000:] + logs
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    print(f"cluster up in {started:.1f} s; run and stop {time.monotonic() - t0 - started:.1f} s")

    rows = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(rows) == len([p for p in sim_shoot.iterdir() if p.is_file()])
    assert set(rows["status"]) <= set(TERMINAL), rows[["source", "status", "reasons"]]
    processed = rows[rows["node"] != ""]
    assert len(processed) >= 6, rows[["source", "status", "node"]]          # the six simulated images
    assert set(processed["node"]) == set(cluster.node_ids), (set(processed["node"]), cluster.node_ids)
    assert marker.exists(), "no worker on the cluster saw the driver's LOUPE_FAILPOINT"

    got, want = comparable_manifest(out), comparable_manifest(local_run)
    pd.testing.assert_frame_equal(got, want, **RUN_TO_RUN)
    assert cluster.stopped and not cluster.alive(cluster.stopped)      # every process of the cluster is gone


def test_the_nodes_are_started_apart_from_the_default_ray_and_stopped_without_ray_stop():
    """The cluster's address is not written where a plain ``ray.init()`` looks (``/tmp/ray``), and its
    processes are gone once it is stopped."""
    default = Path("/tmp/ray/ray_current_cluster")
    before = default.read_text() if default.exists() else None
    with LocalCluster([1]) as cluster:
        assert (cluster.temp_dir / "ray_current_cluster").read_text().strip().endswith(cluster.address.split(":")[1])
        assert (default.read_text() if default.exists() else None) == before
        assert len(cluster._own_pids()) > 2     # ray start, GCS, raylet, agents, workers
    assert cluster.stopped and not cluster.alive(cluster.stopped) and not cluster.temp_dir.exists()


def test_gpu_actors_are_one_per_core_as_many_as_the_gpu_holds():
    """Per GPU, an actor per core of its node's share (the H200 box: 16 cores, 141 GB, 16 one-CPU actors),
    as many as its memory holds at 6 GiB each (a 48 GB card with 16 cores: 8 of 2 CPUs), 4 where the
    GPU's memory is not known; the smallest GPU node's plan, so every actor can be placed; CPU-only and
    dead nodes don't count."""
    def node(name, cpus, gpus=0, alive=True):
        res = {"CPU": float(cpus), "GPU": float(gpus)} if gpus else {"CPU": float(cpus)}
        return {"NodeID": name, "Alive": alive, "Resources": res}

    h200, card = 143771 << 20, 48 << 30
    assert gpu_actor_plan([node("a", 16, 1)], {"a": h200}) == (16, 1)
    assert gpu_actor_plan([node("a", 16, 1)], {"a": card}) == (8, 2)
    assert gpu_actor_plan([node("a", 16, 1)], {}) == (4, 4)                       # memory not known
    assert gpu_actor_plan([node("a", 16, 1), node("b", 64), node("c", 4, 1, alive=False)], {"a": h200}) == (16, 1)
    assert gpu_actor_plan([node("a", 16, 1), node("b", 16, 1)], {"a": h200}) == (4, 4)   # b's GPU not known
    assert gpu_actor_plan([node("a", 32, 2)], {"a": h200}) == (16, 1)
    assert gpu_actor_plan([node("a", 2, 1)], {"a": 4 << 30}) == (1, 2)            # never under one actor
    assert gpu_actor_plan([node("a", 8)], {}) == (1, 1)


def test_local_gpu_memory_is_the_smallest_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '81559\\n24576\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert local_gpu_memory() == 24576 << 20
    smi.write_text("#!/bin/sh\nexit 9\n")        # no driver loaded: no GPU seen, not a crash
    assert local_gpu_memory() == 0
    smi.unlink()
    assert local_gpu_memory() == 0
