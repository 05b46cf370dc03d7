"""Reading sources and writing exports. All file I/O for pixels lives here.

Reading gives a float32 ``(H, W, 3)`` array and says which transfer curve
its values carry; the ``develop`` stage turns that into linear RGB. Writing
is atomic: the bytes go to a temporary file in the target folder, then a
rename, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"}
RASTER_EXTENSIONS = {".jpg", ".jpeg", ".tif", ".tiff", ".png"}
SOURCE_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS

Image.MAX_IMAGE_PIXELS = 400_000_000  # medium-format backs reach 150 MP; refuse only absurd files


class UnreadableSource(Exception):
    """The file is not an image Loupe can decode; the message says why."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # float32 (H, W, 3) in [0, 1]
    transfer: str       # "linear" (RAW) or "srgb" (rendered files)
    kind: str           # "raw" or "raster"


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def read_source(path: Path, *, half_size: bool = False) -> Decoded:
    """Decode a camera RAW or a JPEG/TIFF/PNG, EXIF orientation applied."""
    ext = path.suffix.lower()
    if ext not in SOURCE_EXTENSIONS:
        raise UnreadableSource(f"unsupported file type {ext!r}")
    try:
        return _read_raw(path, half_size) if ext in RAW_EXTENSIONS else _read_raster(path)
    except UnreadableSource:
        raise
    except Exception as exc:  # decoders raise many types; all mean "cannot read this file"
        raise UnreadableSource(f"{type(exc).__name__}: {exc}".strip()) from exc


def _read_raw(path: Path, half_size: bool) -> Decoded:
    import rawpy

    with rawpy.imread(str(path)) as raw:
        # Linear output in sRGB primaries with the camera's as-shot white
        # balance; colour cast is the neutralize stage's job, not LibRaw's.
        rgb = raw.postprocess(
            gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True,
            output_color=rawpy.ColorSpace.sRGB, half_size=half_size,
            demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, adjust_maximum_thr=0.0,
        )
    return Decoded(rgb.astype(np.float32) / 65535.0, "linear", "raw")


def _read_raster(path: Path) -> Decoded:
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        icc = im.info.get("icc_profile")
        if im.mode in ("I;16", "I;16B", "I;16L", "I") or (path.suffix.lower() in (".tif", ".tiff") and im.mode not in ("RGB", "RGBA", "L", "P")):
            return _read_tiff16(path)
        if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            im = im.convert("RGB")
        if icc and im.mode in ("RGB", "RGBA"):
            im = _to_srgb(im.convert("RGB"), icc)
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 16:
        raise UnreadableSource(f"image too small: {rgb.shape[1]}x{rgb.shape[0]}")
    return Decoded(rgb, "srgb", "raster")


def _read_tiff16(path: Path) -> Decoded:
    import tifffile

    arr = tifffile.imread(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    scale = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    return Decoded(np.ascontiguousarray(arr, dtype=np.float32) / scale, "srgb", "raster")


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    """Convert from an embedded profile (e.g. Adobe RGB) to sRGB."""
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
        return im
    return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")


# --- writing -------------------------------------------------------------

def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode(pixels: np.ndarray, fmt: str, *, quality: int = 92, level: int = 1,
           compression: str = "zlib") -> bytes:
    """Encode sRGB-encoded pixels (uint8 or uint16, (H, W, 3|4)) with an sRGB ICC profile."""
    icc = srgb_icc()
    if fmt == "tiff":
        import tifffile

        buf = io.BytesIO()
        comp = None if compression == "none" else compression
        args = {"compressionargs": {"level": level}} if compression == "zlib" else {}
        photometric = "rgb"
        extrasamples = ("unassalpha",) if pixels.shape[2] == 4 else None
        tifffile.imwrite(buf, pixels, photometric=photometric, compression=comp, iccprofile=icc,
                         extrasamples=extrasamples, metadata=None, predictor=compression != "none", **args)
        return buf.getvalue()
    if pixels.dtype != np.uint8:
        raise ValueError(f"{fmt} export needs 8-bit pixels, got {pixels.dtype}")
    im = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.convert("RGB").save(buf, "JPEG", quality=quality, icc_profile=icc, optimize=True, subsampling=0 if quality >= 90 else 2)
    elif fmt == "png":
        im.save(buf, "PNG", icc_profile=icc, compress_level=level)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=quality, icc_profile=icc, method=4)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return buf.getvalue()
