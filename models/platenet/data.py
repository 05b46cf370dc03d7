"""PlateNet's training samples: simulator scenes with their clean plates, as the net reads them.

Its own module so that the training pool's cache key (``models.segnet.train.render_code_digest``: the
simulator package and this file) changes with the code that renders a sample and with nothing else.
"""

from __future__ import annotations

from multiprocessing import Pool

import cv2
import numpy as np

from models.simulator import BACKGROUNDS, linear_to_srgb, render_scene
from models.simulator.studio import WIDE_BACKDROPS

SIZE = (384, 256)                       # what the net reads (W, H)
RENDER = ((768, 512), (900, 600), (1200, 800))


def make_sample(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One scene (7 in 10 from the wide world), its plate and its alpha, uint8 at 384 x 256; every
    third one is rendered upright and transposed."""
    rng = np.random.default_rng([seed, index])
    world = "wide" if rng.random() < 0.7 else "default"
    backdrops = [b for b in (WIDE_BACKDROPS if world == "wide" else BACKGROUNDS) if b != "acrylic"]  # no plate there
    backdrop = backdrops[rng.integers(len(backdrops))]
    w, h = RENDER[rng.integers(len(RENDER))]
    upright = rng.random() < 0.3
    scene = render_scene(rng, (h, w) if upright else (w, h), background=backdrop, world=world, plate=True)
    out = SIZE[::-1] if upright else SIZE

    def shrunk(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, out, interpolation=cv2.INTER_AREA)

    def code(linear: np.ndarray) -> np.ndarray:
        return (np.clip(linear_to_srgb(np.clip(shrunk(linear), 0, 1)), 0, 1) * 255 + 0.5).astype(np.uint8)

    arrays = code(scene.source), code(scene.layers["plate"]), \
        (np.clip(shrunk(scene.alpha.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if upright:
        arrays = tuple(np.ascontiguousarray(np.swapaxes(a, 0, 1)) for a in arrays)
    return (*arrays, f"{world}:{backdrop}")


def _sample(args):
    return make_sample(*args)


def make_pool(seed: int, count: int, workers: int) -> dict[str, np.ndarray]:
    with Pool(workers) as pool:
        rows = pool.map(_sample, [(seed, i) for i in range(count)], chunksize=8)
    return {"image": np.stack([r[0] for r in rows]), "plate": np.stack([r[1] for r in rows]),
            "alpha": np.stack([r[2] for r in rows]), "kind": np.array([r[3] for r in rows])}
