"""The pixel path on one device, without Prefect or Ray: what the Retoucher actors do per image, timed.

For a GPU machine, where ``loupe run``'s orchestration is not installed (Ray's and Prefect's wheels do
not fit what travels there): runs ``flows.retouch.retouch_image`` (decode, develop, every stage, QA's
metrics and evidence, exports, previews) on N images in ``--actors`` worker processes at once, each with
``--threads`` torch/OpenCV threads, as Ray's actors are (a process each, their booked CPUs as threads),
and prints seconds per step, images per minute and the peak memory of a worker (resident and, on CUDA,
the GPU's).

    python bench/device.py --device cuda --images 16 --sources DIR --actors 4     # DIR's images, cycled
    python bench/device.py --device cuda --images 8 --size 6000x4000 --actors 4   # renders them first
    python bench/device.py --device cpu --images 2 --size 1536x1024               # the same path here

A 24 MP scene takes the simulator about a minute on one core, so ``--sources`` takes images rendered
beforehand elsewhere (``loupe synth``'s JPEGs travel; its 24 MP TIFFs and DNGs are 48-144 MB each).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import platform
import pstats
import queue
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.imageio import read_source  # noqa: E402


def actor(rank: int, threads: int, device: str, preset_name: str, files: list[Path], work: Path,
          todo, done, ready, go, profile: int = 0) -> None:
    """One worker process: set up as a Retoucher actor is, warm up on one image (networks loaded and, on
    CUDA, the kernels compiled: not timed), then retouch images from ``todo`` until it is empty.
    ``profile``: worker 0 prints that many functions by their own time (where the host's time goes)."""
    from flows.retouch import checked_preset, retouch_image, set_up_worker

    set_up_worker(threads)
    preset = checked_preset(preset_name)
    retouch_image(files[0], f"warm{rank}", preset, work / f"staging-warm{rank}", device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ready.put(rank)
    go.wait()
    profiler = cProfile.Profile() if profile and rank == 0 else None
    if profiler:
        profiler.enable()
    while (k := todo.get()) is not None:
        outcome = retouch_image(files[k], f"img{k}", preset, work / f"staging-{k}", device=device)
        done.put((outcome.ok, outcome.error, outcome.timings, outcome.seconds, time.perf_counter()))
    if profiler:
        profiler.disable()
        print(f"\nworker 0's own time by function (top {profile}):", flush=True)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(profile)
    gpu = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    done.put(("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, gpu))


class WorkerDied(Exception):
    pass


def collected(q, n: int, workers: list) -> list:
    """``n`` items from ``q``; a worker killed meanwhile (out of memory, a driver fault) raises, where it
    would leave the bench waiting for ever."""
    got = []
    while len(got) < n:
        try:
            got.append(q.get(timeout=5))
        except queue.Empty:
            if dead := [p.exitcode for p in workers if p.exitcode not in (None, 0)]:
                for p in workers:
                    p.kill()
                raise WorkerDied(f"a worker died (exit codes {dead}) after {len(got)} of {n} results") from None
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the simulated sources (24 MP)")
    ap.add_argument("--sources", type=Path, help="use these images (cycled to --images) instead of rendering")
    ap.add_argument("--actors", type=int, default=1, help="worker processes, an image at a time each")
    ap.add_argument("--threads", type=int, help="threads per worker (default: the CPUs shared out evenly)")
    ap.add_argument("--preset", default="catalog")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="worker 0 prints its N most costly functions by own time (cProfile)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no GPU here")
        return 2
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.actors)

    w, h = (int(v) for v in a.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="loupe-device-"))
    ctx = mp.get_context("spawn")   # CUDA cannot be used in a forked child
    todo, done, ready, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    try:
        if a.sources:
            found = sorted(f for f in a.sources.iterdir() if f.is_file())
            files = [found[k % len(found)] for k in range(a.images)]
            h, w = read_source(files[0]).pixels.shape[:2]   # a RAW too, which PIL cannot open
        else:
            from models.simulator import synth_shoot

            print(f"rendering {a.images} simulator scenes at {w}x{h} ...", flush=True)
            files = synth_shoot(work / "shoot", a.images, seed=5, size=(w, h), formats=("tif",))
        workers = [ctx.Process(target=actor, args=(r, threads, a.device, a.preset, files, work, todo, done,
                                                   ready, go, a.profile)) for r in range(a.actors)]
        for p in workers:
            p.start()
        collected(ready, len(workers), workers)
        for k in range(len(files)):
            todo.put(k)
        for _ in workers:
            todo.put(None)
        t0 = time.perf_counter()
        go.set()
        results = collected(done, len(files) + len(workers), workers)
        for p in workers:
            p.join()
    except WorkerDied as died:
        print(died)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    images = [r for r in results if r[0] != "peak"]
    peaks = [r for r in results if r[0] == "peak"]
    failed = [r[1] for r in images if not r[0]]
    if failed:
        print("failed:", failed[:3])
        return 1
    wall = max(r[4] for r in images) - t0

    name = torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or platform.machine()
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, {name}, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print(f"{len(images)} images {w}x{h} ({w * h / 1e6:.0f} MP), preset {a.preset}, device {a.device}, "
          f"{a.actors} workers x {threads} threads\n")
    mean = lambda k: float(np.mean([r[2].get(k, 0) for r in images]))  # noqa: E731
    steps = sorted({k for r in images for k in r[2]}, key=lambda k: -mean(k))
    print("seconds per image, by step (mean):")
    for k in steps:
        print(f"  {k:14s} {mean(k):8.2f}")
    print(f"  {'whole image':14s} {np.mean([r[3] for r in images]):8.2f}")
    print(f"\nwall {wall:.1f} s: {60 * len(images) / wall:.1f} images/min")
    print(f"peak resident memory of a worker: {max(p[1] for p in peaks) / 2**20:.0f} MB")
    if a.device == "cuda":
        print(f"peak GPU memory allocated by a worker: {max(p[2] for p in peaks) / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
