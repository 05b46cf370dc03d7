"""DefectNet: a tiny fully-convolutional net that tells dust from design.

A dust speck and a milgrain bead, a scratch and an engraved line look alike
to any filter; what tells them apart is context (rows, grids, grooves that
follow the metal's form). DefectNet learns that context from the studio
simulator, whose defects and design details come with exact masks
(``models/defectnet/train.py``; weights ship as ``weights.pt``, float16,
~100 KB, 48 k parameters). Full resolution in and out, receptive field 35 px:

    net = load_defectnet()                              # cached, eval mode
    logits = net(linear_to_srgb(image))                 # (B, 2, H, W)
    removable, haze = torch.sigmoid(logits).unbind(1)   # dust/lint/scratch, fingerprint haze
    prob = defect_probability(linear_to_srgb(image), net)   # the same, part by part (large images)

The caller (``tasks/dust.py``) adds the classical evidence (local contrast)
and decides what to repaint.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DefectNet", "load_defectnet", "defect_probability", "native_bfloat16", "DEFAULT_WEIGHTS", "TRAIN_COMMAND", "CHANNELS"]

DEFAULT_WEIGHTS = Path(__file__).with_name("weights.pt")
TRAIN_COMMAND = "python -m models.defectnet.train --out models/defectnet/weights.pt"
CHANNELS = ("removable", "haze")  # dust+lint+scratch; fingerprint haze


class DefectNet(nn.Module):
    """Dilated conv stack (dilations 1, 1, 2, 4, 8, 1), ReLU, no normalisation layers.

    Input ``(B, 3, H, W)`` sRGB in [0, 1], any size; the net adds a high-pass copy
    (image minus its 3 px Gaussian blur, x4) itself, so exposure and gentle
    shading do not matter. Output: logits ``(B, 2, H, W)`` for ``CHANNELS``.
    """

    DILATIONS = (1, 1, 2, 4, 8, 1)
    FEATURE_BLUR = 3.0
    # how far the features' blur reads (3 sigma: ``tasks.ops.gaussian_blur``'s radius); an output pixel
    # sees that plus each 3x3 layer's dilation
    BLUR_REACH = 9

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        dilations = self.DILATIONS
        layers, cin = [], 6
        for d in dilations:
            layers.append(nn.Conv2d(cin, width, 3, padding=d, dilation=d))
            cin = width
        self.body = nn.ModuleList(layers)
        self.head = nn.Conv2d(width, len(CHANNELS), 1)

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        from tasks.ops import gaussian_blur

        return torch.cat([x, 4 * (x - gaussian_blur(x, DefectNet.FEATURE_BLUR))], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        for conv in self.body:
            x = F.relu(conv(x))
        return self.head(x)


@functools.lru_cache(maxsize=4)
def load_defectnet(weights: str | None = None, device: str | torch.device = "cpu") -> DefectNet:
    """Load once per process (a Ray worker keeps it): float32, eval mode, on ``device``."""
    path = Path(weights) if weights else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"DefectNet weights not found: {path} (train them with: {TRAIN_COMMAND})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = DefectNet(width=int(state.pop("width")))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    # channels-last: oneDNN's convolutions run ~1.5x faster on a CPU (the same values to 4e-5)
    return net.to(device).eval().to(memory_format=torch.channels_last)


def native_bfloat16(device: str | torch.device) -> bool:
    """bfloat16 convolutions run natively on ``device``: CUDA with bfloat16, or a CPU with AVX512-BF16
    or AMX (elsewhere oneDNN emulates them, slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return device.type == "cpu" and any(check is not None and check() for check in checks)


def defect_probability(srgb: torch.Tensor, net: DefectNet, tile: int | None = None, where: torch.Tensor | None = None,
                       bfloat16: bool = False) -> torch.Tensor:
    """``sigmoid(net(srgb))`` (B, 2, H, W), computed part by part (``_parts``: bands of ``tile`` rows, each
    on the runs of columns ``where`` holds in it), each layer on just the part's surround the layers after
    it still read (``_logits_on``): the whole image's values, and a part's activations never take 1.3 GB per
    layer at 24 MP. With ``where`` (B, 1, H, W) the answer is the whole image's on ``where`` and 0 away from
    it (a band's run spans the gaps between its pixels under a part's halo). Each part recomputes its
    halo (the layers' reach, 17 px a side): on a 24 MP shot whose piece wants 2.9 M pixels, 128 px
    square tiles made the layers on 2x those, bands of rows on 1.5x (one thread on a 2-core EPYC, two
    24 MP DNGs: 6.2-6.8 -> 4.9-5.2 s and 4.4 -> 3.4 s). ``tile`` (the band's rows) defaults to 96 on a CPU
    (64 and 128 are within 10%) and to 512 elsewhere, where a kernel launch per layer per part, not the
    cache, is what small parts cost. ``bfloat16``: the convolutions in
    bfloat16 where that is native (``native_bfloat16``; 2.2-3x faster on such a CPU, probabilities
    within ~3e-3 of float32), else float32."""
    fast = bfloat16 and native_bfloat16(srgb.device)
    tile = tile or (96 if srgb.device.type == "cpu" else 512)
    h, w = srgb.shape[-2:]
    out = srgb.new_zeros((srgb.shape[0], len(CHANNELS), h, w))
    for ys, xs in _parts(where, (h, w), tile, 2 * (sum(net.DILATIONS) + net.BLUR_REACH)):
        with torch.autocast(srgb.device.type, dtype=torch.bfloat16, enabled=fast):
            out[..., ys, xs] = torch.sigmoid(_logits_on(net, srgb, ys, xs).float())
    return out


# the widest part (px): its activations, 32 channels of (96 + 34) x (2048 + 34) floats, are ~35 MB a layer
PART_WIDTH = 2048


def _parts(where: torch.Tensor | None, size: tuple[int, int], rows: int, gap: int) -> list[tuple[slice, slice]]:
    """Where the net runs: bands of ``rows`` rows, each on the runs of columns holding a pixel of ``where``
    in the band (runs less than ``gap`` apart merged: their halos would overlap), none wider than
    ``PART_WIDTH``; without ``where``, whole bands."""
    h, w = size
    bands = range(0, h, rows)
    if where is None:
        spans = [[(0, w)] for _ in bands]
    else:
        # each band's occupied columns, read once (not a device sync per band)
        held = (F.max_pool2d(where.float().amax((0, 1))[None, None], (rows, 1), ceil_mode=True)[0, 0] > 0).cpu()
        spans = []
        for band in held:
            cols = torch.nonzero(band).flatten()
            if not len(cols):
                spans.append([])
                continue
            cut = torch.nonzero(torch.diff(cols) >= gap).flatten()     # the last column of each run but the last
            starts, stops = torch.cat([cols[:1], cols[cut + 1]]), torch.cat([cols[cut], cols[-1:]]) + 1
            spans.append(list(zip(starts.tolist(), stops.tolist())))
    return [(slice(y, min(h, y + rows)), slice(x, min(stop, x + PART_WIDTH)))
            for y, runs in zip(bands, spans) for start, stop in runs for x in range(start, stop, PART_WIDTH)]


def _logits_on(net: DefectNet, srgb: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
    """``net(srgb)[..., ys, xs]``, computing each layer only where the layers after it read: the part
    grown by their dilations. Inside the image a layer reads real activations; beyond its edge, the zeros
    every layer pads with there (so parts on the edge give the whole image's values too)."""
    from tasks.compose import grow

    size = srgb.shape[-2:]
    reach = sum(net.DILATIONS)
    have = grow((ys, xs), reach, size)                  # the first layer's input: every layer's reach
    read = grow(have, net.BLUR_REACH, size)             # and what the features' blur reads around it
    x = net.features(srgb[..., read[0], read[1]])
    x = x[..., have[0].start - read[0].start:have[0].stop - read[0].start,
          have[1].start - read[1].start:have[1].stop - read[1].start].contiguous(memory_format=torch.channels_last)
    for conv, d in zip(net.body, net.DILATIONS):
        reach -= d
        make = grow((ys, xs), reach, size)              # what the layers after this one read
        # ``have`` is the image's part of ``make`` grown by d; beyond the image's edge, zeros
        pads = (have[1].start - (make[1].start - d), make[1].stop + d - have[1].stop,
                have[0].start - (make[0].start - d), make[0].stop + d - have[0].stop)
        x = F.relu(F.conv2d(F.pad(x, pads) if any(pads) else x, conv.weight, conv.bias, dilation=d), inplace=True)
        have = make
    return net.head(x)
