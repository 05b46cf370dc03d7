"""Loupe studio simulator: procedural jewelry shoots with exact ground truth.

    from models.simulator import synth_shoot, load_truth
    paths = synth_shoot(out_dir, images=8, seed=0)          # OUT/<SKU>_<view>.<ext>
    truth = load_truth(out_dir, paths[0].stem)               # clean/alpha/defects/details/meta

Image ``k`` of a shoot is rendered from ``SeedSequence(seed).spawn(k + 1)[k]``, so it
does not depend on how many images the shoot has; :func:`render_image` re-renders
it in memory (e.g. to get the defected linear source that was encoded).

``synth_shoot(..., world="wide")`` (``loupe synth --world wide``) renders the wide studio
world (:mod:`models.simulator.studio`: beige/kraft/coloured papers, light boxes, acrylic
risers with the piece's reflection, hard shadows, white metal on white, openwork pendants
on bails, depth of field, ISO noise, JPEG); the default world is byte-identical to before.

``synth_shoot(..., sensor_dust=N)`` puts N sensor-dust spots (defect label 5) at the
same frame position in every image; their positions come from a generator of their
own (:func:`sensor_dust_rng`), so the images' own draws, and every file of a shoot
rendered with ``sensor_dust=0``, stay exactly as they were.

See ``writers`` for the exact rawpy call that develops the DNGs back to linear RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .defects import DEFECT_NAMES, lighting_gain, sensor_dust_gain, sensor_dust_spots
from .scene import (BACKGROUNDS, DETAIL_NAMES, METALS, PIECES, SKU_LETTER, STONES, VIEWS, Scene,
                    linear_to_srgb, render_scene, srgb_to_linear)
from .studio import WIDE_BACKDROPS, WIDE_PIECES, WORLDS
from .writers import WRITERS, read_truth, write_truth

__all__ = [
    "synth_shoot", "write_scene", "load_truth", "render_scene", "render_image", "image_rng", "image_stem", "Scene",
    "PIECES", "METALS", "STONES", "BACKGROUNDS", "VIEWS", "DEFECT_NAMES", "DETAIL_NAMES",
    "lighting_gain", "linear_to_srgb", "srgb_to_linear", "develop_dng", "sensor_dust_rng",
    "sensor_dust_spots", "sensor_dust_gain", "shoot_sensor_dust", "WORLDS", "WIDE_BACKDROPS", "WIDE_PIECES",
]

FORMATS = tuple(WRITERS)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """Child generator of image ``index``; independent of the shoot size."""
    child = np.random.SeedSequence(int(seed)).spawn(int(index) + 1)[int(index)]
    return np.random.default_rng(child)


# spawn key of the shoot's sensor-dust generator: two entries, so it can never equal an
# image's (one entry, ``(index,)``)
_SENSOR_DUST_KEY = (0x5E, 0xD5)


def sensor_dust_rng(seed: int) -> np.random.Generator:
    """Generator of the shoot's sensor-dust positions; independent of every image's."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=_SENSOR_DUST_KEY))


def shoot_sensor_dust(seed: int, n: int) -> list[dict]:
    """The ``n`` sensor-dust spots shared by every image of shoot ``seed`` (normalised)."""
    return sensor_dust_spots(sensor_dust_rng(seed), n) if n > 0 else []


def render_image(seed: int, index: int, size=(1536, 1024), *, defects: bool = True,
                 sensor_dust: int = 0, world: str = "default") -> Scene:
    """Re-render image ``index`` of shoot ``seed`` exactly as :func:`synth_shoot` did."""
    return render_scene(image_rng(seed, index), size, defects=defects,
                        sensor_dust=shoot_sensor_dust(seed, sensor_dust) or None, world=world)


def image_stem(scene: Scene, index: int) -> str:
    return f"{SKU_LETTER[scene.meta['piece']]}{1000 + index:04d}_{scene.meta['view']}"


def synth_shoot(out_dir: Path, images: int, seed: int, *, size: tuple[int, int] = (1536, 1024),
                formats: tuple[str, ...] = ("dng", "jpg", "tif"), defects: bool = True,
                sensor_dust: int = 0, world: str = "default") -> list[Path]:
    """Render ``images`` scenes into the shoot folder ``out_dir``; return the source files.

    Image k is written as ``formats[k % len(formats)]``; truth goes to ``out_dir/truth/<stem>/``.
    ``sensor_dust``: number of sensor-dust spots shared by every image (0: none).
    ``world``: "default" or "wide" (see :mod:`models.simulator.studio`).
    """
    out_dir = Path(out_dir)
    formats = tuple(formats)
    bad = [f for f in formats if f not in WRITERS]
    if not formats or bad:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    if images > 9000:
        raise ValueError("at most 9000 images per shoot (SKU numbers are 4 digits)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(int(images)):
        scene = render_image(seed, k, size, defects=defects, sensor_dust=sensor_dust, world=world)
        paths.append(write_scene(out_dir, scene, k, formats[k % len(formats)],
                                 seed=int(seed), index=k, size=[int(size[0]), int(size[1])]))
    return paths


def write_scene(out_dir: Path, scene: Scene, index: int, fmt: str, /, **meta) -> Path:
    """Write ``scene`` (image ``index`` of its seed) as ``out_dir/<stem>.<fmt>`` and its truth to
    ``out_dir/truth/<stem>/`` (the scene's meta with its format, stem and ``meta``); return the source's path."""
    stem = image_stem(scene, index)
    path = Path(out_dir) / f"{stem}.{fmt}"
    WRITERS[fmt](path, scene.as_written(fmt))
    write_truth(Path(out_dir) / "truth" / stem, scene, {**scene.meta, "format": fmt, "stem": stem, **meta})
    return path


def load_truth(out_dir: Path, stem: str) -> dict:
    """Read ``out_dir/truth/<stem>``: clean (float32 HxWx3 linear), alpha (float32 HxW),
    defects (uint8), details (uint8), meta (dict)."""
    return read_truth(Path(out_dir) / "truth" / stem)


def develop_dng(path: Path) -> np.ndarray:
    """Develop a simulator DNG back to float32 linear sRGB-primaries RGB in [0, 1]."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True,
                              output_color=rawpy.ColorSpace.sRGB, user_flip=0, adjust_maximum_thr=0.0)
    return rgb.astype(np.float32) / 65535.0
