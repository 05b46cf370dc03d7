"""Throughput of ``loupe run`` on a one-node and a two-node Ray cluster (images per minute, and the ratio).

    python bench/cluster.py [--images 8] [--size 1536x1024] [--cpus-per-node K] [--no-pin]

A simulated shoot of ``--images`` images is written to a temporary folder, then processed twice
by ``loupe run`` as a driver attached with ``RAY_ADDRESS`` to a real cluster started with
``ray start``: once on one node with K CPUs, once on a head node and a second node of K CPUs
each. Both nodes run on this machine (their own processes, raylets and object stores, one
shared disk), so the ratio shows how the work spreads over nodes; on a real cluster each node
brings its own cores. K defaults to half this machine's cores, so that the two nodes together
use all of them and the one-node run uses half: on a 2-core machine K = 1, i.e. one image at a
time against two at a time. Each node's processes are pinned to its own K cores (``--no-pin``: not), as if
it were its own machine; the driver is not pinned.

Images per minute are timed inside the run (the flow's own ``done in`` line: ingest, sensor-dust
survey, retouch, QA, routing, manifest and report, but not the driver's Python start-up and imports);
the whole command's wall time is printed as well. Both runs use one ``prefect server start`` begun
here (or ``PREFECT_API_URL`` if set), so neither pays for Prefect's temporary server.
Each cluster is started and stopped by this script (``LocalCluster``: its processes are found
by their own temporary folder and killed by id; ``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def ray_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``ray start`` and the drivers: offline, no usage stats, no auth."""
    env = dict(os.environ if base is None else base)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """A Ray cluster of ``len(cpus)`` nodes on this machine, started with ``ray start --block``.

    Everything lives under a fresh temporary folder (``--temp-dir``), so the cluster's address
    file is not the machine's default one and a plain ``ray.init()`` elsewhere (a test session's
    own Ray) neither finds it nor is disturbed by it. Every port is chosen free. Stopping sends
    SIGTERM to each ``ray start --block`` (which stops its node's processes), then SIGKILL to any
    process of the cluster still left (its descendants, found before the stop, and anything whose command
    line names the temporary folder), each by its id: never ``ray stop``, which stops every Ray process
    on the machine.
    """

    def __init__(self, cpus: list[int], env: dict[str, str] | None = None, start_timeout: float = 90,
                 pin: list[set[int]] | None = None):
        self.cpus = cpus
        self.pin = pin          # per node: the cores its processes (raylet, workers) may run on
        # the nodes stand for other machines: none of the driver's LOUPE_* settings (the driver sends them)
        self.env = {k: v for k, v in ray_env(env).items() if not k.startswith("LOUPE_")}
        self.start_timeout = start_timeout
        self.temp_dir = Path(tempfile.mkdtemp(prefix="loupe-ray-", dir="/tmp"))   # short: socket paths
        self.address = ""
        self.node_ids: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self.stopped: dict[int, int] = {}      # the processes stop() ended (pid -> start time)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_node(self, index: int, args: list[str]) -> None:
        agent, agent_grpc, metrics, runtime_env, node_manager, object_manager, dashboard = _free_ports(7)
        log = open(self.temp_dir / f"node{index}.log", "wb")
        cmd = [RAY, "start", "--block", f"--temp-dir={self.temp_dir}", f"--num-cpus={self.cpus[index]}",
               "--num-gpus=0", f"--resources={json.dumps({f'loupe_node{index}': 1})}",
               f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
               f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
               "--object-store-memory=300000000", "--disable-usage-stats", *args]
        if "--head" in args:   # even without a dashboard the head runs a minimal one, by default on 8265
            cmd.append(f"--dashboard-port={dashboard}")
        cores = self.pin[index] if self.pin else None
        with log:
            self._procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.temp_dir,
                                                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None))
        deadline = time.monotonic() + self.start_timeout
        path = self.temp_dir / f"node{index}.log"
        while b"Ray runtime started" not in path.read_bytes():
            if self._procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {index} did not start:\n{path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def start(self) -> None:
        port, = _free_ports(1)
        self._start_node(0, ["--head", f"--port={port}", "--include-dashboard=false"])
        self.address = f"127.0.0.1:{port}"
        for i in range(1, len(self.cpus)):
            self._start_node(i, [f"--address={self.address}"])
        self.node_ids = self.wait_for_nodes(len(self.cpus))

    def wait_for_nodes(self, n: int) -> list[str]:
        """The ids of the cluster's live nodes, once there are ``n`` (asked of the GCS by a
        separate process, so the caller never joins this cluster as a driver)."""
        probe = ("import json, sys; from ray._raylet import GcsClient; "
                 "nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values(); "
                 "print(json.dumps([n.node_id.hex() for n in nodes if n.state == 0]))")   # 0: ALIVE
        deadline = time.monotonic() + self.start_timeout
        while True:
            out = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                                 text=True, timeout=60)
            ids = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout else []
            if len(ids) >= n:
                return ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster at {self.address} has {len(ids)} of {n} nodes: {out.stderr[-2000:]}")
            time.sleep(0.5)

    def _own_pids(self) -> dict[int, int]:
        """This cluster's live processes (pid -> start time): everything descended from its ``ray start``
        processes (raylets, GCS, agents, and workers, which rename themselves ``ray::...``), and anything
        else whose command line names its temporary folder."""
        table: dict[int, tuple[int, int]] = {}      # pid -> (parent, start time)
        needle, named = str(self.temp_dir).encode(), set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), int(fields[19]))
                if needle in (entry / "cmdline").read_bytes():
                    named.add(int(entry.name))
        own = {p.pid for p in self._procs if p.poll() is None} | named
        grew = True
        while grew:
            children = {pid for pid, (parent, _) in table.items() if parent in own} - own
            own |= children
            grew = bool(children)
        own.discard(os.getpid())
        return {pid: table[pid][1] for pid in own if pid in table}

    @staticmethod
    def alive(processes: dict[int, int]) -> list[int]:
        """Which of ``processes`` (pid -> start time, from ``_own_pids``) still run."""
        left = []
        for pid, started in processes.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) == started:
                    left.append(pid)
        return left

    def stop(self) -> None:
        processes = self._own_pids()          # before the parents go: orphans lose their lineage
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _ in range(5):   # what is left (workers outlive their raylet for a moment)
            left = self.alive(processes) + [pid for pid in self._own_pids() if pid not in processes]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.stopped = processes
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def loupe_run(shoot: Path, out: Path, address: str, *, preset: str = "catalog", env: dict[str, str] | None = None,
              timeout: float = 1800) -> subprocess.CompletedProcess:
    """``loupe run SHOOT --out OUT`` as a driver of the cluster at ``address`` (by ``RAY_ADDRESS``)."""
    env = {**ray_env(env), "RAY_ADDRESS": address}
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", str(shoot), "--out", str(out),
                           "--preset", preset, "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def prefect_server(home: Path, env: dict[str, str]):
    """A ``prefect server start`` on a free loopback port for the runs (its API URL and pid), so that no
    run pays for starting Prefect's temporary server; nothing when ``PREFECT_API_URL`` is already set."""
    import httpx

    if env.get("PREFECT_API_URL"):
        yield env["PREFECT_API_URL"], None
        return
    port, = _free_ports(1)
    api = f"http://127.0.0.1:{port}/api"
    log = home / "prefect-server.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as f:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env={**env, "PREFECT_HOME": str(home)}, cwd=home,
                                  stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield api, server.pid
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        if server.poll() is None:
            server.kill()


def phase_seconds(api: str) -> dict[str, float]:
    """Seconds per Prefect task (survey_sensor_dust, process, ...) of the latest flow run."""
    import httpx

    runs = httpx.post(f"{api}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=10).json()
    tasks = httpx.post(f"{api}/task_runs/filter", timeout=10,
                       json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}}).json() if runs else []
    return {t["name"].rsplit("-", 1)[0]: float(t["total_run_time"]) for t in tasks}


def _done_seconds(stdout: str) -> float | None:
    m = re.search(r"done in (\d+)m(\d+)s", stdout)
    return int(m.group(1)) * 60 + int(m.group(2)) if m else None


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes) since boot."""
    fields = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU seconds used by a cluster's processes, sampled every second while it runs (workers that are
    killed keep their last sample: Ray does not account them to their raylet)."""

    def __init__(self, cluster: LocalCluster):
        self.cluster, self.seen, self._stop = cluster, {}, threading.Event()
        self._sample()
        self.base = sum(self.seen.values())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for pid, started in self.cluster._own_pids().items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.seen[(pid, started)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.seen.values()) - self.base


def _tree_cpu(root: int | None) -> float:
    """CPU seconds of a process and its live descendants (the Prefect server and its uvicorn worker)."""
    if root is None:
        return 0.0
    parents = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(shoot: Path, cpus: list[int], work: Path, env: dict[str, str], pin: bool, server: int | None) -> dict:
    """One ``loupe run`` of the shoot on a fresh cluster of ``cpus`` (per node): its figures, and how much
    CPU other work on the machine took meanwhile (which makes the figures unclean). Ours: the driver, the
    cluster, the Prefect server, this process."""
    out = work / f"out-{len(cpus)}node"
    cores = [set(range(sum(cpus[:i]), sum(cpus[:i + 1]))) for i in range(len(cpus))] if pin else None
    with LocalCluster(cpus, env=env, pin=cores) as cluster:
        meter = _CpuMeter(cluster)
        t0, busy0, before = time.monotonic(), _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
        server0, self0 = _tree_cpu(server), time.process_time()
        result = loupe_run(shoot, out, cluster.address, env=env)
        wall, busy = time.monotonic() - t0, _busy_seconds() - busy0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu, self_cpu = _tree_cpu(server) - server0, time.process_time() - self0
        cluster_cpu = meter.stop()
    driver_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"loupe run failed on {len(cpus)} node(s):\n{result.stderr[-4000:]}")
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds = _done_seconds(result.stdout) or wall
    retouch = phase_seconds(env["PREFECT_API_URL"]).get("process", float("nan"))
    return dict(nodes=len(cpus), cpus=sum(cpus), images=len(rows), seconds=seconds, wall=wall,
                per_minute=60 * len(rows) / seconds, retouch=retouch, retouch_per_minute=60 * len(rows) / retouch,
                driver_cpu=driver_cpu, cluster_cpu=cluster_cpu, prefect_cpu=server_cpu + self_cpu,
                other_cpu=max(0.0, busy - driver_cpu - cluster_cpu - server_cpu - self_cpu),
                statuses=sorted({r["status"] for r in rows}), used_nodes=len({r["node"] for r in rows if r["node"]}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", default="1536x1024", help="WxH of the simulated images")
    p.add_argument("--cpus-per-node", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="K")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let every node's processes use every core (default: node i is pinned to its own K cores)")
    a = p.parse_args(argv)
    w, h = map(int, a.size.lower().split("x"))
    sys.path.insert(0, str(ROOT))
    from models.simulator import synth_shoot

    k = a.cpus_per_node
    env = ray_env()
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"shoot: {a.images} simulated images at {w}x{h} (seed {a.seed}); nodes on this machine, K = {k} CPU(s) each")
    pinned = (f"each node pinned to its own {k} core(s) (cores 0-{k - 1} and {k}-{2 * k - 1}), as if on its own "
              f"machine" if a.pin else "nodes not pinned: an actor's libraries (OpenCV, torch) may use every core")
    print(f"note: both nodes run on this machine, {pinned}. One node = {k} Retoucher actor(s) ({k} CPU(s)); two "
          f"nodes = {2 * k}, one image per CPU at a time. The driver (ingest, QA, routing, report) is not pinned and "
          f"shares the machine's {os.cpu_count()} cores" + (": in the two-node run no core is left for it, "
                                                             "which a real cluster's driver machine would bring"
                                                             if 2 * k >= (os.cpu_count() or 1) else ""))
    with tempfile.TemporaryDirectory(prefix="loupe-bench-cluster-") as tmp:
        work = Path(tmp)
        shoot = work / "shoot"
        synth_shoot(shoot, images=a.images, seed=a.seed, size=(w, h))
        env["PREFECT_HOME"] = str(work / "prefect")
        with prefect_server(work / "prefect", env) as (api, server):
            env["PREFECT_API_URL"] = api
            results = [measure(shoot, [k], work, env, a.pin, server), measure(shoot, [k, k], work, env, a.pin, server)]
    for r in results:
        print(f"{r['nodes']} node(s), {r['cpus']} CPU(s): {r['images']} images, run {r['seconds']:.0f} s "
              f"= {r['per_minute']:.1f} images/min; retouch phase {r['retouch']:.1f} s = "
              f"{r['retouch_per_minute']:.1f} images/min ({r['wall']:.0f} s with the driver's start-up); "
              f"CPU s: driver {r['driver_cpu']:.0f}, cluster {r['cluster_cpu']:.0f}, Prefect server and bench "
              f"{r['prefect_cpu']:.0f}, other work on the machine "
              f"{r['other_cpu']:.0f}; images ran on {r['used_nodes']} node(s); statuses {', '.join(r['statuses'])}")
    one, two = results
    print(f"ratio 2 nodes / 1 node: {two['per_minute'] / one['per_minute']:.2f}x for the whole run, "
          f"{two['retouch_per_minute'] / one['retouch_per_minute']:.2f}x for the retouch phase "
          f"(issue 12's target: >= 1.8x)")
    if any(r["other_cpu"] > 0.1 * r["wall"] for r in results):
        print("warning: other work took more than a tenth of a core during the runs: these figures are not clean; "
              "run again on a quiet machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
