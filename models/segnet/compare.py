"""Compare SegNet weights on held-out simulator scenes of both worlds (IoU per backdrop).

    python -m models.segnet.compare OLD.pt NEW.pt [--n-default 24] [--n-wide 16] [--threads 1]

Scenes (384x256, the net's working size) are disjoint from the training pools
(``SeedSequence([seed, i, 0x5E6])``) and from the training validation
(``default_rng([2024|2025, b, i])``):

* default world: ``render_scene(default_rng([4242, b, i]), background=BACKGROUNDS[b])``
* wide world:    ``render_scene(default_rng([4343, b, i]), background=WIDE_BACKDROPS[b], world="wide")``

IoU: prob > 0.5 vs alpha > 0.5, mean per image.  Prints a markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from models.segnet import load_segnet
from models.segnet.train import render_set, validate
from models.simulator import BACKGROUNDS
from models.simulator.studio import WIDE_BACKDROPS

SEEDS = {"default": 4242, "wide": 4343}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--n-default", type=int, default=24)
    ap.add_argument("--n-wide", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    nets = [load_segnet(w) for w in a.weights]
    print("| world | backdrop | n | " + " | ".join(a.weights) + " |")
    print("|---|---|---|" + "---|" * len(nets))
    res = {}
    for world, n in (("default", a.n_default), ("wide", a.n_wide)):
        allv = [[] for _ in nets]
        kinds = BACKGROUNDS if world == "default" else tuple(WIDE_BACKDROPS)
        for bg, one in render_set(kinds, n, SEEDS[world], world=world).items():
            vals = [validate(net, {bg: one}, "cpu")[bg] for net in nets]
            for k, v in enumerate(vals):
                allv[k].append(v)
            res[(world, bg)] = vals
            print(f"| {world} | {bg} | {n} | " + " | ".join(f"{v:.3f}" for v in vals) + " |", flush=True)
        print(f"| {world} | **mean** | | " + " | ".join(f"**{np.mean(v):.3f}**" for v in allv) + " |", flush=True)
    return res


if __name__ == "__main__":
    main()
