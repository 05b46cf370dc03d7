"""HoleNet's samples: the holes the sweep path leaves in simulator scenes, labelled by the scene's truth.

Each scene of the simulator's training worlds (default and wide; never the validation family) is written
as a camera file (DNG, JPEG or TIFF in turn), developed, neutralized and cut out as ``loupe run`` does it
with HoleNet off; the holes of its mask (``tasks.cutout.hole_candidates``) become windows
(``models.holenet.windows``) on the photo and the fitted sweep, labelled facet (1) where the truth has
piece under most of the hole, else opening (0). Scenes the cut-out sends down the network path, or with
no piece found, give none.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from infra.imageio import developed
from models.holenet import windows
from models.simulator import image_stem, render_image, write_scene
from tasks.color import linear_to_srgb
from tasks.cutout import cut_out, fitted_sweep, hole_candidates
from tasks.frame import Frame
from tasks.ops import resize
from tasks.pipeline import STAGE_NAMES, run_stages, stage_params

SIZES = ((1200, 800), (900, 600), (1536, 1024))
FORMATS = ("dng", "jpg", "tif")
WORLDS = ("default", "wide")
FROM_CUTOUT = tuple(n for n in STAGE_NAMES if STAGE_NAMES.index(n) >= STAGE_NAMES.index("cutout"))


def scene_samples(seed: int, index: int, folder: Path) -> dict[str, np.ndarray]:
    """The windows, scalars and labels of one scene's holes (world, size and format follow ``index``)."""
    world, size, fmt = WORLDS[index % 2], SIZES[(index // 2) % 3], FORMATS[(index // 6) % 3]
    scene = render_image(seed, index, size, world=world)
    path = write_scene(folder, scene, index, fmt, seed=seed, index=index)
    truth = scene.alpha
    params = stage_params({"cutout": {"facet_network": False}})
    with torch.inference_mode():
        neutral, _, _ = run_stages(Frame(developed(path)), params, FROM_CUTOUT, want_reference=False)
        cutout = params["cutout"]
        cut = cut_out(neutral, cutout)
        path.unlink()
        if not any("smooth fit" in n for n in cut.notes) or not bool((cut.alpha > 0.5).any()):
            return {}
        enc = linear_to_srgb(neutral.image)
        backdrop = resize(fitted_sweep(enc, cutout)[0], tuple(enc.shape[-2:]))
    mask = (cut.alpha[0, 0] > 0.5).numpy().astype(np.uint8)
    labels, stats, ids = hole_candidates(mask, 1.0)
    if not len(ids):
        return {}
    hwc = lambda t: t[0].permute(1, 2, 0).numpy()  # noqa: E731
    x, s = windows(hwc(enc), hwc(backdrop), mask, labels, stats, ids)
    facet = np.array([(truth[labels == k] > 0.5).mean() > 0.5 for k in ids], np.float32)
    return {"x": x.astype(np.float16), "s": s, "y": facet, "scene": np.full(len(ids), index, np.int32),
            "kind": np.array([world] * len(ids)), "stem": np.array([image_stem(scene, index)] * len(ids))}


def make_samples(seed: int, start: int, count: int) -> dict[str, np.ndarray]:
    """Samples of scenes ``start`` .. ``start + count - 1`` of ``seed``, concatenated."""
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(start, start + count):
            found = scene_samples(seed, index, Path(tmp))
            if found:
                parts.append(found)
            print(f"scene {index}: {len(found.get('y', []))} holes", flush=True)
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
