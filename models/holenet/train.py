"""Train HoleNet on the holes the sweep path leaves in simulator scenes.

    python -m models.holenet.train --out models/holenet/weights.pt

The samples (``models.holenet.data``) are made once by ``--workers`` processes and cached under
``--cache``, named with a digest of the code that makes them. One scene in five is held out (by its
index); the net trains on the others with flips and quarter turns, BCE weighted to the classes' sizes,
AdamW and a cosine rate. ``TRAINING.md`` next to ``--out`` records the run and, on the held-out scenes,
the share of facets filled and of openings filled at each probability the cut-out may ask for.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from models import holenet
from models.holenet import HoleNet, data
from models.segnet.train import cached_pool, save_weights, start_run
from tasks import cutout

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def _chunk(job: tuple[int, int, int]) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    return data.make_samples(*job)


def make_pool(seed: int, scenes: int, workers: int) -> dict[str, np.ndarray]:
    """Samples of scenes 0 .. ``scenes`` - 1 of ``seed``, made in ``workers`` contiguous chunks."""
    bounds = np.linspace(0, scenes, workers + 1).astype(int)
    jobs = [(seed, int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = [p for p in pool.map(_chunk, jobs) if p]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random flip and quarter turn of each window: a hole has no up or down."""
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, (2, 3))
    return x.flip(3) if bool(torch.rand(1, generator=gen) < 0.5) else x


def rates(p: np.ndarray, y: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, share of facets filled, share of openings filled) at each of ``THRESHOLDS``."""
    return [(t, float((p[y == 1] >= t).mean()), float((p[y == 0] >= t).mean())) for t in THRESHOLDS]


def predict(net: HoleNet, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``holenet.facet_probability`` of the (float16) pool's windows, 512 at a time, in eval mode."""
    net.eval()
    out = [holenet.facet_probability(net, (x[i:i + 512].astype(np.float32), s[i:i + 512]))
           for i in range(0, len(x), 512)]
    net.train()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/holenet/weights.pt")
    ap.add_argument("--scenes", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--widths", default="24,48,64", help="channels of the net's three stages")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cache", default=os.environ.get("LOUPE_HOLENET_CACHE", "/tmp/loupe-holenet-cache"))
    args = ap.parse_args(argv)
    t_start = time.time()
    device, out, cache = start_run(args)
    pool = cached_pool(cache / f"pool_s{args.seed}_n{args.scenes}.npz",
                       lambda: make_pool(args.seed, args.scenes, args.workers), "holes",
                       modules=(data, cutout, holenet))
    held = pool["scene"] % 5 == 0
    x, s, y = pool["x"], pool["s"], pool["y"]
    train = np.flatnonzero(~held)
    pos = float(y[train].mean())
    net = HoleNet(tuple(int(v) for v in args.widths.split(","))).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * max(1, len(train) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    weight = torch.tensor([(1 - pos) / max(pos, 1e-3)], device=device)
    for step in range(steps):
        idx = train[torch.randint(len(train), (args.batch,), generator=gen).numpy()]
        xb = augment(torch.from_numpy(x[idx].astype(np.float32)), gen).to(device)
        logits = net(xb, torch.from_numpy(s[idx]).to(device))
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y[idx]).to(device), pos_weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0 or step + 1 == steps:
            p = predict(net, x[held], s[held])
            acc = float(((p >= 0.5) == (y[held] == 1)).mean())
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} held-out accuracy {acc:.3f}", flush=True)
    p = predict(net, x[held], s[held])
    table = rates(p, y[held])
    save_weights(net, out, {"seed": args.seed, "scenes": args.scenes, "held_out": table})
    wall = time.time() - t_start
    cmd = "python -m models.holenet.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    nparams = sum(q.numel() for q in net.parameters())
    lines = ["# HoleNet training record", "", "Written by `models/holenet/train.py` at the end of the run.", "",
             f"- command: `{cmd}`",
             f"- samples: {len(y)} holes of {args.scenes} scenes (seed {args.seed}; "
             f"{int(y.sum())} facets, {int((y == 0).sum())} openings); held out: the {int(held.sum())} holes of "
             f"every fifth scene",
             f"- {steps} steps of {args.batch} ({args.epochs} epochs), device {args.device}, threads {args.threads}",
             f"- wall time: {wall / 60:.1f} min (including the samples, when not cached)",
             f"- parameters: {nparams} (widths {args.widths}); weights file "
             f"{out.stat().st_size / 1024:.0f} KiB (float16 state dict)", "",
             "## Held-out holes: what the cut-out fills at each `facet_network_p`", "",
             "| probability | facets filled | openings filled |", "|---|---|---|"]
    lines += [f"| {t} | {f:.3f} | {o:.3f} |" for t, f, o in table]
    (out.parent / "TRAINING.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(table) - 2:]), flush=True)


if __name__ == "__main__":
    main()
