"""Source-file writers (DNG / JPEG / TIFF) and truth files.

DNG
---
A real Bayer RAW: RGGB mosaic of the *defected* linear render (colour cast,
uneven light, defects and noise included), 12-bit values stored in uint16,
BlackLevel 256, WhiteLevel 4095, camera colour = linear sRGB primaries
(ColorMatrix1 = XYZ(D65) -> linear sRGB, CalibrationIlluminant1 = D65),
AsShotNeutral = [1, 1, 1] (camera WB at daylight, so the cast stays in the
developed image), Orientation = horizontal unless asked.

Develop it back to linear RGB (values /65535) with::

    with rawpy.imread(path) as raw:
        rgb16 = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16,
                                use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB,
                                user_flip=0, adjust_maximum_thr=0.0)
    linear = rgb16.astype(np.float32) / 65535

``adjust_maximum_thr=0.0`` matters: with LibRaw's default (0.75) the white point
is lowered to the brightest pixel actually present, which scales the whole image
up by 3839 / (max - 256) (e.g. x1.11 when the brightest pixel is 0.9).  With it,
the round trip has scale 1.000 +- 0.002 per channel (BaselineExposure 0 is honoured
as-is) and a mean absolute error vs the defected linear render of 0.004-0.008 per
pixel at 1536x1024 (dominated by the simulated sensor noise, which AHD demosaicing
re-interpolates; ~0.002 after a 5x5 box blur; ~0.0006 on a noise-free image).

JPEG: 8-bit sRGB (IEC 61966-2-1 curve), quality 95, 4:4:4, embedded sRGB ICC.
TIFF: 16-bit sRGB-encoded RGB, zlib, embedded sRGB ICC.
Truth: clean.tif (16-bit LINEAR RGB, value/65535), alpha.png, defects.png,
details.png (8-bit), meta.json.  No timestamps are written anywhere, so files
are byte-identical for identical inputs.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageCms

from .scene import _XYZ_TO_SRGB, linear_to_srgb

BLACK, WHITE = 256, 4095

_ICC_CACHE: bytes | None = None


def srgb_icc() -> bytes:
    """sRGB ICC profile from littleCMS with its creation date pinned (determinism)."""
    global _ICC_CACHE
    if _ICC_CACHE is None:
        b = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        # header bytes 24..35: dateTimeNumber (6 x uint16 BE) -> 2024-01-01 00:00:00
        b[24:36] = bytes([0x07, 0xE8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
        b[84:100] = bytes(16)  # profile ID (MD5) left zero = "not computed"
        _ICC_CACHE = bytes(b)
    return _ICC_CACHE


def _rational(v: float, den: int = 10000):
    f = Fraction(float(v)).limit_denominator(den)
    return [f.numerator, f.denominator]


def bayer_rggb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    m = np.empty((h, w), img.dtype)
    m[0::2, 0::2] = img[0::2, 0::2, 0]
    m[0::2, 1::2] = img[0::2, 1::2, 1]
    m[1::2, 0::2] = img[1::2, 0::2, 1]
    m[1::2, 1::2] = img[1::2, 1::2, 2]
    return m


def write_dng(path: Path, linear: np.ndarray, orientation: int = 1) -> Path:
    """``linear`` (H, W, 3) as a mosaiced DNG; ``orientation``: its TIFF/EXIF tag (the mosaic is
    stored as given: a reader turns it by the tag)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation, PreviewColorSpace

    h, w = linear.shape[:2]
    if h % 2 or w % 2:
        raise ValueError("DNG writer needs even width and height (RGGB 2x2 tiles)")
    raw = np.clip(np.round(BLACK + bayer_rggb(np.clip(linear, 0, 1)) * (WHITE - BLACK)), 0, WHITE)
    raw = raw.astype(np.uint16)
    t = DNGTags()
    t.set(Tag.ImageWidth, w)
    t.set(Tag.ImageLength, h)
    t.set(Tag.TileWidth, w)
    t.set(Tag.TileLength, h)
    t.set(Tag.Orientation, orientation)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, CFAPattern.RGGB)
    t.set(Tag.BlackLevel, BLACK)
    t.set(Tag.WhiteLevel, WHITE)
    t.set(Tag.ColorMatrix1, [_rational(v) for v in _XYZ_TO_SRGB.ravel()])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    t.set(Tag.BaselineExposure, [[0, 1]])
    t.set(Tag.Make, "Loupe")
    t.set(Tag.Model, "Loupe StudioSim")
    t.set(Tag.UniqueCameraModel, "Loupe StudioSim")
    t.set(Tag.DNGVersion, DNGVersion.V1_4)
    t.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
    t.set(Tag.PreviewColorSpace, PreviewColorSpace.sRGB)
    conv = RAW2DNG()
    conv.options(t, path="", compress=False)
    buf = conv.convert(raw)
    path = Path(path)
    path.write_bytes(bytes(buf))
    return path


def _to_u16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 65535).astype(np.uint16)


def write_jpeg(path: Path, linear: np.ndarray) -> Path:
    srgb = np.round(linear_to_srgb(linear) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(srgb, "RGB").save(buf, "JPEG", quality=95, subsampling=0, icc_profile=srgb_icc(),
                                      optimize=False)
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def write_tiff(path: Path, linear: np.ndarray) -> Path:
    tifffile.imwrite(path, _to_u16(linear_to_srgb(linear)), photometric="rgb", compression="zlib",
                     iccprofile=srgb_icc(), metadata=None, software="Loupe StudioSim")
    return Path(path)


WRITERS = {"dng": write_dng, "jpg": write_jpeg, "tif": write_tiff}


def _png(path: Path, arr: np.ndarray) -> None:
    ok, enc = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise IOError(f"png encode failed: {path}")
    Path(path).write_bytes(enc.tobytes())


def write_truth(truth_dir: Path, scene, meta: dict) -> None:
    truth_dir = Path(truth_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(truth_dir / "clean.tif", _to_u16(scene.clean), photometric="rgb", compression="zlib",
                     metadata=None, software="Loupe StudioSim")
    _png(truth_dir / "alpha.png", np.round(np.clip(scene.alpha, 0, 1) * 255).astype(np.uint8))
    _png(truth_dir / "defects.png", scene.defects.astype(np.uint8))
    _png(truth_dir / "details.png", scene.details.astype(np.uint8))
    (truth_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def read_truth(truth_dir: Path) -> dict:
    truth_dir = Path(truth_dir)
    clean = tifffile.imread(truth_dir / "clean.tif").astype(np.float32) / 65535.0

    def png(name):
        a = cv2.imread(str(truth_dir / name), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise FileNotFoundError(truth_dir / name)
        return a

    return {
        "clean": clean,
        "alpha": png("alpha.png").astype(np.float32) / 255.0,
        "defects": png("defects.png").astype(np.uint8),
        "details": png("details.png").astype(np.uint8),
        "meta": json.loads((truth_dir / "meta.json").read_text()),
    }
