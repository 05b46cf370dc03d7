"""Helpers shared by the tests (importable because conftest's folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def scene_frame(scene, device="cpu"):
    """A Frame of a simulator scene's source, as ``develop`` would give for a RAW."""
    from tasks.develop import DevelopParams, develop

    pixels = torch.from_numpy(np.ascontiguousarray(scene.source)).permute(2, 0, 1)[None].to(device)
    return develop(pixels.clamp(0, 1), "linear", DevelopParams())


def to_tensor(arr: np.ndarray, device="cpu") -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return (t.permute(2, 0, 1) if t.ndim == 3 else t[None])[None].to(device)
