"""PlateNet: a small U-Net that finds the piece given the shot and its clean plate.

With a clean plate (a frame of the empty backdrop, same camera and light) the question is no longer
"what is backdrop" but "what changed, and is it the piece or its shadow": a grey darkening of the
plate may be a shadow or white metal, and in camera noise a per-pixel test cannot tell them apart.
This net reads the shot, the plate and their difference at ~384 px and gives the piece's
probability there; the cut-out keeps deciding edges and thin wire at full resolution
(``tasks.cutout``). Trained only on simulator scenes with plates (``models/platenet/train.py``,
``models/platenet/TRAINING.md``); weights ship as ``models/platenet/weights.pt`` (float16).

    net = load_platenet()
    prob = plate_probability(image, plate, net)     # linear RGB (B,3,H,W) each -> (B,1,H,W) in [0, 1]
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from models.segnet import SegNet, load_weights, net_input_size, padded_probability, resized
from tasks.color import linear_to_srgb

__all__ = ["PlateNet", "load_platenet", "plate_probability", "DEFAULT_WEIGHTS", "TRAIN_COMMAND"]

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.pt")
TRAIN_COMMAND = "python -m models.platenet.train --out models/platenet/weights.pt"


class PlateNet(SegNet):
    """SegNet's U-Net on the shot and its plate: input (B,6,H,W), both sRGB in [0,1]; their difference
    (x4) is added inside. Output: logits (B,1,H,W)."""

    def __init__(self, widths=(16, 32, 48, 64, 96)):
        super().__init__(widths, in_channels=9)

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        shot, plate = x[:, :3], x[:, 3:]
        return torch.cat([shot, plate, (shot - plate) * 4], 1)


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> PlateNet:
    return load_weights(PlateNet, path, device, TRAIN_COMMAND)


def load_platenet(path: str | Path | None = None, device="cpu") -> PlateNet:
    """Load (cached) the trained net from ``path`` (default ``models/platenet/weights.pt``), eval mode."""
    return _load(str(Path(path) if path is not None else DEFAULT_WEIGHTS), str(torch.device(device)))


def plate_probability(shot: torch.Tensor, plate: torch.Tensor, net: PlateNet, size: int = 384) -> torch.Tensor:
    """Piece probability (B,1,H,W) of linear RGB shots (B,3,H,W) given their plates (the same shape).

    Both are area-resized in linear light so the long edge is ``size`` (as a camera would see them
    at that size), made sRGB, replicate-padded to a multiple of 16 and run through ``net``; the
    probability is cropped and bilinearly resized back to H,W, on the shot's device and dtype."""
    if shot.shape != plate.shape or shot.ndim != 4 or shot.shape[1] != 3:
        raise ValueError(f"expected two (B,3,H,W) of one shape, got {tuple(shot.shape)}, {tuple(plate.shape)}")
    B, _, H, W = shot.shape
    dev = next(net.parameters()).device
    h, w = net_input_size(H, W, size)
    with torch.inference_mode():
        def small(x):
            return linear_to_srgb(resized(x.to(device=dev, dtype=torch.float32), (h, w)).clamp(0, 1))
        p = padded_probability(net, torch.cat([small(shot), small(plate)], 1))
        if (h, w) != (H, W):
            p = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)
        return p.to(device=shot.device, dtype=shot.dtype)
