"""HoleNet: is a hole in the sweep path's mask a facet or face cut out, or an opening of the piece?

A highlight on white metal, a stone's bright facet or a polished face mirroring the sweep can match the
backdrop within its noise and drop out of the mask as a hole. Per-pixel figures (the hole's size,
shade, contrast, SegNet's word) overlap between those and real openings (link gaps, eyelets, openwork:
README, "Why facets and faces stay cut out"). HoleNet looks at each hole in its surroundings: a small
CNN on a window around the hole (the photo in sRGB, its departure from the backdrop model, the hole and
the piece around it), scaled to the hole's size, plus the hole's share of the piece and its shade.

Trained only on the simulator's training worlds (``models/holenet/data.py``, ``TRAINING.md``); weights
ship as ``models/holenet/weights.pt`` (float16 state dict). The cut-out asks it only with
``[stages.cutout] facet_network = true``: off by default, as on real photos it also fills openings
(README, "HoleNet").

    net = load_holenet()
    p = facet_probability(net, windows(enc, backdrop, mask, labels, stats, ids))   # (N,) in [0, 1]
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from models.segnet import load_weights, resized

__all__ = ["HoleNet", "load_holenet", "windows", "facet_probability", "DEFAULT_WEIGHTS", "TRAIN_COMMAND", "WINDOW"]

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.pt")
TRAIN_COMMAND = "python -m models.holenet.train --out models/holenet/weights.pt"
WINDOW = 48          # px of the network's window
REACH = 2.5          # the window's side, in the hole's larger side (at least MIN_SIDE px of the frame)
MIN_SIDE = 24
CHANNELS = 8         # sRGB (3), 4 x the departure from the backdrop (3), the hole (1), the piece around it (1)
SCALARS = 3          # log10 of the hole's share of the piece, its light over the backdrop's, log2 of the window's scale


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HoleNet(nn.Module):
    """Windows (N, CHANNELS, WINDOW, WINDOW) and scalars (N, SCALARS) -> logits (N,): facet (1) or opening (0)."""

    def __init__(self, widths=(24, 48, 64)):
        super().__init__()
        self.widths = tuple(widths)
        a, b, c = self.widths
        self.body = nn.Sequential(_conv(CHANNELS, a), _conv(a, a), nn.MaxPool2d(2),
                                  _conv(a, b), _conv(b, b), nn.MaxPool2d(2),
                                  _conv(b, c), nn.MaxPool2d(2), _conv(c, c))
        self.head = nn.Sequential(nn.Linear(2 * c + SCALARS, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3)), scalars], 1)
        return self.head(f)[:, 0]


def windows(enc: np.ndarray, backdrop: np.ndarray, mask: np.ndarray, labels: np.ndarray, stats: np.ndarray,
            ids) -> tuple[np.ndarray, np.ndarray]:
    """The network's inputs for holes ``ids`` of ``mask`` (``tasks.regions.holes``' labels and stats):
    ``enc``/``backdrop`` (H, W, 3) sRGB float32, ``mask`` (H, W) uint8 with the holes off it.
    Returns (N, CHANNELS, WINDOW, WINDOW) and (N, SCALARS) float32. Each window is centred on its hole's
    box and REACH times its larger side; past the frame's edge the edge pixels repeat."""
    h, w = mask.shape
    piece_area = max(int(mask.sum()), 1)
    xs, ss = [], []
    for k in ids:
        x, y, bw, bh, area = (int(v) for v in stats[k])
        side = max(MIN_SIDE, math.ceil(REACH * max(bw, bh)))
        cy, cx = y + bh // 2, x + bw // 2
        rows = np.clip(np.arange(cy - side // 2, cy - side // 2 + side), 0, h - 1)
        cols = np.clip(np.arange(cx - side // 2, cx - side // 2 + side), 0, w - 1)
        at = np.ix_(rows, cols)
        hole = (labels[at] == k).astype(np.float32)
        seen, behind = enc[at], backdrop[at]
        stack = np.concatenate([seen, 4 * (seen - behind), hole[..., None], mask[at][..., None].astype(np.float32)], 2)
        xs.append(resized(torch.from_numpy(stack.transpose(2, 0, 1))[None], (WINDOW, WINDOW))[0].numpy())
        on = hole > 0
        light = float(seen[on].mean()) / max(float(behind[on].mean()), 1e-3)
        ss.append([math.log10(area / piece_area), light, math.log2(side / WINDOW)])
    if not xs:
        return np.zeros((0, CHANNELS, WINDOW, WINDOW), np.float32), np.zeros((0, SCALARS), np.float32)
    return np.stack(xs).astype(np.float32), np.asarray(ss, np.float32)


def facet_probability(net: HoleNet, inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """P(facet) of each window (N,), from ``windows``' inputs."""
    x, s = inputs
    if not len(x):
        return np.zeros(0, np.float32)
    dev = next(net.parameters()).device
    with torch.inference_mode():
        return torch.sigmoid(net(torch.from_numpy(x).to(dev), torch.from_numpy(s).to(dev))).cpu().numpy()


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> HoleNet:
    return load_weights(HoleNet, path, device, TRAIN_COMMAND)


def load_holenet(path: str | Path | None = None, device="cpu") -> HoleNet:
    """Load (cached) the trained net from ``path`` (default ``models/holenet/weights.pt``), eval mode."""
    return _load(str(Path(path) if path is not None else DEFAULT_WEIGHTS), str(torch.device(device)))
