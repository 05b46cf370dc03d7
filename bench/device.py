"""The pixel path on one device, without Prefect or Ray: what a Retoucher actor does per image, timed.

For a GPU machine, where ``loupe run``'s orchestration is not installed (Ray's and Prefect's wheels do
not fit what travels there): renders N simulator scenes (TIFF, so no RAW decoder is needed), runs
``flows.retouch.retouch_image`` on each (decode, develop, every stage, QA's metrics and evidence,
exports, previews) with ``--in-flight`` images at a time, as the actors sharing a GPU do, and prints
seconds per step, images per minute and peak memory (the process's and, on CUDA, the GPU's).

    python bench/device.py --device cuda --images 8 --size 6000x4000 --in-flight 4
    python bench/device.py --device cpu --images 2 --size 1536x1024          # the same path here

On a CPU keep ``--in-flight 1``: the per-image memory cap is per process.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the simulated sources (24 MP)")
    ap.add_argument("--in-flight", type=int, default=1, help="images processed at once (4 actors share a GPU)")
    ap.add_argument("--preset", default="catalog")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no GPU here")
        return 2
    if a.device == "cpu" and a.in_flight != 1:
        print("--in-flight > 1 needs --device cuda (the CPU path caps memory per process)")
        return 2
    from flows.retouch import checked_preset, retouch_image
    from infra.limits import reuse_freed_memory
    from models.simulator import synth_shoot

    reuse_freed_memory()    # as every Retoucher actor does

    w, h = (int(v) for v in a.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="loupe-device-"))
    try:
        print(f"rendering {a.images} simulator scenes at {w}x{h} ...", flush=True)
        files = synth_shoot(work / "shoot", a.images, seed=5, size=(w, h), formats=("tif",))
        preset = checked_preset(a.preset)
        # one image first, alone: loads the networks and, on CUDA, warms the kernels (not timed)
        retouch_image(files[0], "warm", preset, work / "staging-warm", device=a.device)
        if a.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def one(k: int):
            return retouch_image(files[k], f"img{k}", preset, work / f"staging-{k}", device=a.device)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.in_flight) as pool:
            outcomes = list(pool.map(one, range(len(files))))
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [o.error for o in outcomes if not o.ok]
    if failed:
        print("failed:", failed[:3])
        return 1

    name = torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or platform.machine()
    print(f"\nmachine: {platform.platform()}, {name}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"{len(outcomes)} images {w}x{h} ({w * h / 1e6:.0f} MP), preset {a.preset}, device {a.device}, "
          f"{a.in_flight} in flight\n")
    mean = lambda k: float(np.mean([o.timings.get(k, 0) for o in outcomes]))  # noqa: E731
    steps = sorted({k for o in outcomes for k in o.timings}, key=lambda k: -mean(k))
    print("seconds per image, by step (mean):")
    for k in steps:
        print(f"  {k:14s} {mean(k):8.2f}")
    print(f"  {'whole image':14s} {np.mean([o.seconds for o in outcomes]):8.2f}")
    print(f"\nwall {wall:.1f} s: {60 * len(outcomes) / wall:.1f} images/min")
    print(f"peak resident memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if a.device == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
