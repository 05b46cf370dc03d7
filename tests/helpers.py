"""Helpers shared by the tests (importable because conftest's folder is on sys.path)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
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


def sim_scene(seed: int, size=(480, 320), **kwargs):
    """A simulator scene from ``np.random.default_rng(seed)``, cached (treat it as read-only)."""
    return _sim_scene(seed, tuple(size), tuple(sorted(kwargs.items())))


def _sim_scene_uncached(seed, size, items):
    from models.simulator import render_scene

    return render_scene(np.random.default_rng(seed), size, **dict(items))


def _cache():
    import functools

    return functools.lru_cache(maxsize=64)(_sim_scene_uncached)


_sim_scene = _cache()


def prepared_frame(scene, device="cpu", *, truth_piece: bool = False):
    """``develop`` + ``neutralize`` + ``cutout`` as the pipeline runs them; with ``truth_piece`` the
    piece mask and alpha are replaced by the simulator's truth so later stages are tested alone."""
    from tasks.cutout import CutoutParams, cut_out
    from tasks.neutralize import NeutralizeParams, neutralize

    frame = neutralize(scene_frame(scene, device), NeutralizeParams())
    if truth_piece:
        alpha = to_tensor(scene.alpha, device)
        return frame.replace(alpha=alpha).with_masks(piece=(alpha > 0.5).to(alpha.dtype))
    return cut_out(frame, CutoutParams())


@contextlib.contextmanager
def served(app):
    """``app`` under uvicorn on a free loopback port, in a thread: yields the port."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)


# Two runs of one shoot in different processes differ only by float noise, which a median or a hue over a
# mask's edge pixels can carry to the 4th digit: a near-grey metal's hue once moved by 0.003 deg, a chain's
# metal chroma (a median over ~2000 pixels) by 0.0096 of 25.5. Statuses, reasons and exports compare exactly.
RUN_TO_RUN = {"check_exact": False, "rtol": 1e-3, "atol": 2e-3}


def comparable_manifest(out: Path):
    """``out``'s manifest by source, without what differs run to run (timings, worker memory, start times, node ids),
    numbers as numbers (a rejected row's empty cells would keep a column as text): two runs of the same
    shoot compare equal with ``pandas.testing.assert_frame_equal(..., atol=...)``."""
    import pandas as pd

    df = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("source").sort_index()
    df = df.drop(columns=["seconds", "worker_peak_mb", "started_at", "node"])
    for column in df:
        numbers = pd.to_numeric(df[column].replace("", None), errors="coerce")
        if numbers.notna().sum() == (df[column] != "").sum():
            df[column] = numbers
    return df
