"""Throughput: simulator RAW files at 24 MP through ``loupe run`` with the default preset, beside the floors.

Prints, from one run on this machine: seconds per step per image (the catalog's timings: decode, develop,
each stage, QA, encodes), images per minute, peak resident memory per worker, start-up (wall time before
the first image starts) and orchestration overhead (wall time not inside any image, per worker), and in the
same run the floors: rawpy decode alone, the preset's encodes alone, and ``darktable-cli`` (develop only,
no retouch) on the same files when it is installed (Debian package ``darktable``), with the CPUs it keeps
busy, as ratios of wall time per image: with start-up and shutdown, over the images' span, and with every
worker warm (darktable threads across the machine; each Loupe worker takes one CPU, so one image's own
time is no like-for-like comparison).

    .venv/bin/python bench/throughput.py [--images 2] [--size 6000x4000] [--preset catalog] [--keep DIR]
    .venv/bin/python bench/throughput.py --images 1000 --size 480x320 --floor-sample 20   # orchestration at scale
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.catalog import Catalog  # noqa: E402
from infra.imageio import encode, read_source  # noqa: E402
from infra.layout import default_state  # noqa: E402
from infra.presets import load_preset  # noqa: E402


def floors(files: list[Path], preset_name: str) -> dict[str, float]:
    """Seconds per image: rawpy's decode alone, and the preset's encodes alone, of what the exports hold:
    the simulator's clean piece (its truth) on white and cut out with its alpha, made into each export's
    codes as the actor makes them (``flows.retouch.export_pixels``, not timed). Encoding the noisy source
    instead would time content the zlib coders barely compress, slower than any real export."""
    import torch

    from flows.retouch import export_pixels
    from models.simulator.writers import read_truth
    from tasks.frame import Frame

    preset = load_preset(preset_name)
    decode, encodes = [], []
    for path in files:
        t0 = time.perf_counter()
        read_source(path)
        decode.append(time.perf_counter() - t0)
        truth = read_truth(path.parent / "truth" / path.stem)
        clean = torch.from_numpy(truth["clean"].transpose(2, 0, 1).copy())[None]
        alpha = torch.from_numpy(truth["alpha"])[None, None]
        finished = Frame(clean * alpha + (1 - alpha), alpha=alpha, foreground=clean)
        spent = 0.0
        for spec, pixels in export_pixels(finished, preset):
            t0 = time.perf_counter()
            encode(pixels, spec.format, quality=spec.quality, level=spec.level, compression=spec.compression)
            spent += time.perf_counter() - t0
        encodes.append(spent)
    return {"decode": float(np.mean(decode)), "encodes": float(np.mean(encodes))}


def darktable(files: list[Path], work: Path) -> tuple[float, float] | None:
    """Seconds per image for ``darktable-cli IN OUT.jpg`` (develop and export only) and the CPUs it kept
    busy meanwhile (its CPU seconds over its wall seconds: it threads across the machine, where each
    Loupe worker takes one CPU); None if not installed."""
    exe = shutil.which("darktable-cli")
    if exe is None:
        return None
    spent = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for path in files:
        out = work / f"{path.stem}-dt.jpg"
        t0 = time.perf_counter()
        subprocess.run([exe, str(path), str(out), "--core", "--configdir", str(work / "dtconf")],
                       check=True, capture_output=True)
        spent.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(np.mean(spent)), cpu / sum(spent)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the simulated RAW files (24 MP)")
    ap.add_argument("--preset", default="catalog")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    ap.add_argument("--floor-sample", type=int, help="time the floors and darktable on this many of the files "
                    "(default: all; darktable alone takes ~0.5 s a file even at 480x320)")
    a = ap.parse_args()
    from models.simulator import synth_shoot

    w, h = (int(v) for v in a.size.split("x"))
    work = a.keep or Path(tempfile.mkdtemp(prefix="loupe-throughput-"))
    shoot = work / "shoots" / "throughput"
    if not shoot.exists():
        print(f"rendering {a.images} simulator RAW files at {w}x{h} ...", flush=True)
        synth_shoot(shoot, a.images, seed=5, size=(w, h), formats=("dng",))
    files = sorted(shoot.glob("*.dng"))

    sample = files[:a.floor_sample] if a.floor_sample else files
    floor = floors(sample, a.preset)
    dt = darktable(sample, work)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    run = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(shoot), "--out", str(out), "--preset", a.preset,
                          "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if run.returncode != 0:
        print(run.stderr[-3000:])
        return 1
    rows = [r for r in Catalog.open(default_state(out)).rows() if r["status"] != "rejected"]
    timings = [json.loads(r["timings"] or "{}") for r in rows]
    seconds = [r["seconds"] for r in rows]
    metrics = [json.loads(r["metrics"]) for r in rows]
    peaks = [m.get("worker_peak_mb", 0) for m in metrics]
    workers = max(1, min(len(rows), os.cpu_count() or 1))      # one Retoucher actor per CPU, at most one per image
    first_start = min(m["started_at"] for m in metrics)          # the worker's clock: not the commit's, after QA
    steps = sorted({k for t in timings for k in t}, key=lambda k: -np.mean([t.get(k, 0) for t in timings]))

    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{len(rows)} images {w}x{h} ({w * h / 1e6:.0f} MP), preset {a.preset}, {workers} workers\n")
    print("seconds per image, by step (mean):")
    for k in steps:
        print(f"  {k:14s} {np.mean([t.get(k, 0) for t in timings]):8.1f}")
    per_image = float(np.mean(seconds))
    print(f"  {'whole image':14s} {per_image:8.1f}")
    # a fresh worker's first image also faults in the memory its later images reuse (on the 2-core VM 11-17 s of
    # system time, 0.1-3 s on later ones): the first image each worker began is told apart from the rest
    order = np.argsort([m["started_at"] for m in metrics])
    later = [seconds[k] for k in order[workers:]]
    steady = float(np.mean(later)) if later else None
    if steady is not None:
        print(f"  {'after a first':14s} {steady:8.1f}   (the {len(later)} images after each worker's first; "
              f"first images {np.mean([seconds[k] for k in order[:workers]]):.1f})")
    span = max(r["updated_at"] for r in rows) - first_start      # first image started -> last one committed
    idle = span - sum(seconds) / workers
    print(f"\nwall {wall:.0f} s: {60 * len(rows) / wall:.2f} images/min; start-up {first_start - start:.0f} s before "
          f"the first image; orchestration overhead {wall - span:.0f} s ({(wall - span) / wall:.0%} of wall time "
          f"before the first image starts and after the last is committed); workers idle {max(0.0, idle):.0f} s "
          "of the images' span (uneven images, too few to share out)")
    print(f"peak resident memory per worker: {max(peaks):.0f} MB")
    if len(rows) >= 100:    # does the run slow down as it grows (the catalog, the driver's bookkeeping)?
        done = np.sort([r["updated_at"] for r in rows])
        tenth = len(done) // 10
        pace = [60 * tenth / (done[k + tenth - 1] - done[k]) for k in (0, len(done) - tenth)]
        print(f"commits per minute: {pace[0]:.1f} over the first tenth of the images, {pace[1]:.1f} over the last")
    print(f"\nfloors, per image: rawpy decode {floor['decode']:.1f} s, the preset's encodes {floor['encodes']:.1f} s")
    if dt is None:
        print("darktable-cli: not installed (Debian package darktable); no ratio")
    else:
        dt, dt_cpus = dt
        # darktable threads across the machine; Loupe runs one image per worker per CPU: the fair measure of
        # a night is the wall time per image while every worker is busy (the images' span), start-up apart
        print(f"darktable-cli (develop + JPEG only): {dt:.1f} s per image, {dt_cpus:.1f} CPUs busy")
        print(f"Loupe/darktable in wall time per image: {wall / len(rows) / dt:.1f}x with start-up and shutdown, "
              f"{span / len(rows) / dt:.1f}x over the images' span (first image started -> last committed)"
              + (f", {steady / workers / dt:.1f}x with every worker warm (an image after a worker's first, "
                 f"shared by the {workers} workers)" if steady is not None else ""))
        print(f"  one image's own time against darktable's: {per_image / dt:.1f}x (each worker takes one CPU)")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
