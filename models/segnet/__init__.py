"""SegNet: a small U-Net that finds the jewelry piece on cluttered backgrounds.

Trained only on simulator composites (see ``models/segnet/data.py`` and
``models/segnet/TRAINING.md``); weights ship as ``models/segnet/weights.pt``
(float16 state dict).  Gives a *coarse* piece probability at ~384 px long edge;
edges are meant to be refined at full resolution by the caller.

    net = load_segnet()                                   # cached, eval mode
    prob = piece_probability(linear_to_srgb(img), net)    # (B,1,H,W) in [0, 1]
    mask = prob > 0.5
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SegNet", "load_segnet", "piece_probability", "DEFAULT_WEIGHTS", "TRAIN_COMMAND"]

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.pt")
TRAIN_COMMAND = "python -m models.segnet.train --out models/segnet/weights.pt"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class SegNet(nn.Module):
    """U-Net, 5 resolutions (input side must be a multiple of 16), BatchNorm, ReLU, bilinear up.

    Input (B,3,H,W) sRGB in [0,1]; three extra channels are computed inside: the image
    normalised per image and channel (mean/std), which removes colour cast and exposure.
    Output: logits (B,1,H,W).
    """

    def __init__(self, widths=(16, 32, 48, 64, 96), in_channels: int = 6):
        super().__init__()
        self.widths = tuple(widths)
        w = self.widths
        self.enc = nn.ModuleList()
        cin = in_channels       # what ``features`` makes of the input
        for c in w:
            self.enc.append(_block(cin, c))
            cin = c
        self.dec = nn.ModuleList()
        for i in range(len(w) - 2, -1, -1):
            self.dec.append(_block(cin + w[i], w[i]))
            cin = w[i]
        self.head = nn.Conv2d(w[0], 1, 1)

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(0.02)
        return torch.cat([x, (x - mean) / std * 0.25], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        skips = []
        for i, blk in enumerate(self.enc):
            if i:
                x = F.max_pool2d(x, 2)
            x = blk(x)
            skips.append(x)
        skips.pop()
        for blk in self.dec:
            s = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, s], 1))
        return self.head(x)


def load_weights(cls: type[SegNet], path: str, device: str, train_command: str) -> SegNet:
    """A ``cls`` (SegNet or a subclass) from a float16 state dict at ``path``, in eval mode, no gradients."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{cls.__name__} weights not found at {p}; train them with `{train_command}` "
                                f"(see {p.parent / 'TRAINING.md'})")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    net = cls(widths=tuple(int(v) for v in blob["widths"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    net.eval()
    for q in net.parameters():
        q.requires_grad_(False)
    return net.to(device)


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str) -> SegNet:
    return load_weights(SegNet, path, device, TRAIN_COMMAND)


def load_segnet(path: str | Path | None = None, device="cpu") -> SegNet:
    """Load (cached) the trained net from ``path`` (default ``models/segnet/weights.pt``), eval mode."""
    return _load(str(Path(path) if path is not None else DEFAULT_WEIGHTS), str(torch.device(device)))


def net_input_size(H: int, W: int, size: int) -> tuple[int, int]:
    """(h, w) of an H x W frame whose long edge is brought to ``size``."""
    s = size / max(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def resized(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``x`` at (h, w): area filter when shrinking, bilinear when growing (a frame smaller than the net's size)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if hw[0] < x.shape[-2] or hw[1] < x.shape[-1]:
        return F.interpolate(x, size=hw, mode="area")
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def padded_probability(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sigmoid(net(x))`` of an input of any size: replicate-padded to a multiple of 16, then cropped back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return torch.sigmoid(net(x))[:, :, :h, :w]


def piece_probability(image_srgb: torch.Tensor, net: SegNet, size: int = 384, *, coarse: bool = False
                      ) -> torch.Tensor:
    """Coarse piece probability (B,1,H,W) of sRGB images (B,3,H,W) in [0,1].

    The image is area-resized so its long edge is ``size``, replicate-padded to a
    multiple of 16, run through ``net``; the probability is cropped and bilinearly
    resized back to H,W (with ``coarse``: left at the network's size, for a caller that
    reads only part of it at full size, ``tasks.ops.resize_at``).  Output on the input's
    device and dtype.
    """
    if image_srgb.ndim != 4 or image_srgb.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W), got {tuple(image_srgb.shape)}")
    B, _, H, W = image_srgb.shape
    dev = next(net.parameters()).device
    with torch.inference_mode():
        x = image_srgb.to(device=dev, dtype=torch.float32)
        if bool(x.min() < 0) or bool(x.max() > 1):   # no full-size copy when it is in range already
            x = x.clamp(0, 1)
        h, w = net_input_size(H, W, size)
        p = padded_probability(net, resized(x, (h, w)))
        if (h, w) != (H, W) and not coarse:
            p = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)
        return p.to(device=image_srgb.device, dtype=image_srgb.dtype)
