"""DefectNet's training samples: 96 px crops of simulator scenes with their per-pixel label codes.

Its own module so that the training pool's cache key (``models.segnet.train.render_code_digest``: the
simulator package and this file) changes with the code that renders a sample and with nothing else.
Scenes come from ``models.simulator.render_scene`` with seeds of their own (the benchmark and tests use
others). The camera's cast, exposure and light fall-off are divided out with the scene's truth, as
``neutralize`` would, then jittered a little; crops are taken around every defect, around design details
(hard negatives: pave, milgrain, engraving, prongs, chain), on the piece and anywhere. A defect too faint
to see (mean sRGB change < ``VISIBLE``) is not taught either way.
"""

from __future__ import annotations

import functools
import multiprocessing as mp

import cv2
import numpy as np

from models.simulator import BACKGROUNDS, lighting_gain, linear_to_srgb, render_scene

CROP = 96
SIZES = ((640, 427), (900, 600), (1200, 800), (1536, 1024))
BG_WEIGHTS = (0.35, 0.3, 0.2, 0.15)  # white, grey, coloured paper, desk
SEED = 4242
VISIBLE = 0.03  # mean |sRGB change| over a defect's pixels below which it is invisible
# crop label codes
BACK, REMOVABLE, HAZE, IGNORE, DETAIL = 0, 1, 2, 3, 4


def neutral_source(scene) -> np.ndarray:
    """The source with the truth's cast, exposure and fall-off divided out."""
    ill = scene.meta["illuminant"]
    h, w = scene.alpha.shape
    img = scene.source / (np.asarray(ill["rgb"], np.float32) * ill["exposure"])
    return np.clip(img / lighting_gain(scene.meta["lighting"], w, h)[..., None], 0, 1)


def scene_crops(i: int, wide: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Crops of scene ``i``: from the simulator's wide studio world with probability ``wide`` (its
    backdrops, ISO noise, JPEG, depth of field and exposure push on top of the same defects), drawn
    apart from the scene's own stream, so ``wide=0`` gives the shipped run's scenes."""
    rng = np.random.default_rng([SEED, i])
    size = SIZES[int(rng.integers(len(SIZES)))]
    bg = BACKGROUNDS[int(rng.choice(len(BACKGROUNDS), p=BG_WEIGHTS))]
    if np.random.default_rng([SEED, i, 1]).random() < wide:
        scene = render_scene(rng, size, world="wide")
    else:
        scene = render_scene(rng, size, background=bg)
    neutral = neutral_source(scene)
    # neutralize lands within ~0.6-1.1x of the truth's exposure, and leaves some cast on paper and desks
    jitter = rng.uniform(0.55, 1.15) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    srgb = (linear_to_srgb(np.clip(neutral * jitter, 0, 1)) * 255 + 0.5).astype(np.uint8)
    d = scene.defects
    codes = np.full(d.shape, BACK, np.uint8)
    codes[cv2.dilate((scene.details > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = DETAIL
    codes[cv2.dilate((d > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = IGNORE
    codes[d == 4] = HAZE
    # a defect nobody can see (grey speck on dark metal) is not taught either way
    change = np.abs(linear_to_srgb(neutral) - linear_to_srgb(scene.clean)).mean(2)
    n, lab = cv2.connectedComponents(np.isin(d, (1, 2, 3, 5)).astype(np.uint8))
    for k in range(1, n):
        part = lab == k
        codes[part] = REMOVABLE if change[part].mean() >= VISIBLE else IGNORE
    h, w = d.shape
    centres = []
    n, _, _, cent = cv2.connectedComponentsWithStats((d > 0).astype(np.uint8))
    centres += [c + rng.normal(0, 20, 2) for c in cent[1:][rng.permutation(n - 1)[:12]]]
    for mask, k in ((scene.details > 0, 8), (scene.alpha > 0.5, 6), (np.ones_like(d, bool), 2)):
        ys, xs = np.nonzero(mask)
        if len(ys):
            pick = rng.integers(len(ys), size=k)
            centres += [np.array([xs[j], ys[j]], float) for j in pick]
    imgs, labs = [], []
    for cx, cy in centres:
        x0 = int(np.clip(cx - CROP / 2, 0, w - CROP))
        y0 = int(np.clip(cy - CROP / 2, 0, h - CROP))
        imgs.append(srgb[y0:y0 + CROP, x0:x0 + CROP])
        labs.append(codes[y0:y0 + CROP, x0:x0 + CROP])
    return np.stack(imgs), np.stack(labs)


def make_pool(scenes: int, workers: int, wide: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    # spawn: rawpy/OpenMP and fork do not mix (DESIGN.md)
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(functools.partial(scene_crops, wide=wide), range(scenes), chunksize=4)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
