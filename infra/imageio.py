"""Reading sources and writing exports. All file I/O for pixels lives here.

Reading gives a float32 ``(H, W, 3)`` array and says which transfer curve
its values carry; the ``develop`` stage turns that into linear RGB. Before any
decode the header's size is held to a pixel budget (``TooLarge``), so a tiny file
declaring gigapixels costs nothing; truncated files are refused. Writing
is atomic: the bytes go to a temporary file in the target folder, then a
rename, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

from tasks.color import LUMINANCE

RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"}
RASTER_EXTENSIONS = {".jpg", ".jpeg", ".tif", ".tiff", ".png"}
SOURCE_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS

# The pixel budget, checked from the file's header before anything is decoded. A 61 MP
# full-frame body (Sony A7R IV/V, Sigma fp L, Leica M11: 60-62 MP even counting LibRaw's
# sensor margins) must pass; decoding costs ~25-30 bytes a pixel at its peak (LibRaw's
# 16-bit buffers, then the float32 RGB that is returned: 12 B/px alone), so 64 MP is
# ~2 GB in one worker. A 26 KB file can declare 600 MP. Medium format (GFX100: 102 MP,
# IQ4: 151 MP) needs ``max_pixels`` raised together with the workers' memory.
MAX_SOURCE_PIXELS = 64_000_000

# Pillow's own bomb guard is the backstop for every other Image.open in the process:
# make it raise, not just warn (it only raises above twice the limit by itself).
Image.MAX_IMAGE_PIXELS = 400_000_000
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
# A truncated file must be refused, not decoded with its missing rows made up
# (False is Pillow's default; a library that flips it would hide truncation).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_ORIENTATION = 0x0112  # EXIF/TIFF tag


class UnreadableSource(Exception):
    """The file is not an image Loupe can decode; the message says why."""


class TooLarge(UnreadableSource):
    """The header declares more pixels than the budget: refused before decoding."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # float32 (H, W, 3) in [0, 1]; (H, W, 1) for a grey decode (``read_source(grey=True)``)
    transfer: str       # "linear" (RAW) or "srgb" (rendered files)
    kind: str           # "raw" or "raster"
    reduced: bool = False   # decoded at half size (``half_size`` and a format that can: RAW, JPEG)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def read_source(path: Path, *, half_size: bool = False, grey: bool = False,
                max_pixels: int = MAX_SOURCE_PIXELS) -> Decoded:
    """Decode a camera RAW or a JPEG/TIFF/PNG, EXIF orientation applied.

    ``half_size``: half each side where the decoder does it for less work (a preview, the sensor-dust
    survey): a RAW without demosaicing (LibRaw's half size), a JPEG by its DCT scaling; other files whole.
    ``grey`` (with ``half_size``): a RAW with a 2x2 Bayer mosaic may come as its linear luminance alone,
    ``(H, W, 1)``, read straight from the mosaic (``_bayer_luminance``, for maps that only compare a pixel
    with its surroundings); every other file as without it.

    Raises ``TooLarge`` when the header declares more than ``max_pixels`` (nothing is
    decoded then), ``UnreadableSource`` for anything else that cannot be read.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SOURCE_EXTENSIONS:
        raise UnreadableSource(f"unsupported file type {ext!r}")
    try:
        if path.stat().st_size == 0:
            raise UnreadableSource("empty file")
        if ext in RAW_EXTENSIONS:
            decoded = _read_raw(path, half_size, max_pixels, grey)
        else:
            decoded = _read_raster(path, max_pixels, half_size)
    except UnreadableSource:
        raise
    except Image.DecompressionBombError as exc:  # twice Pillow's backstop: it refuses before we see the size
        raise TooLarge(f"{_one_line(exc)} (pixel budget {_mp(max_pixels)} MP)") from exc
    except MemoryError:  # a worker's memory cap (infra.limits) stopped a decode within the budget
        raise TooLarge(f"ran out of memory decoding it (pixel budget {_mp(max_pixels)} MP)") from None
    except Exception as exc:  # decoders raise many types; all mean "cannot read this file"
        raise UnreadableSource(f"{type(exc).__name__}: {_one_line(exc)}") from exc
    h, w = decoded.pixels.shape[:2]
    if min(h, w) < 16:
        raise UnreadableSource(f"image too small: {w}x{h}")
    return decoded


def developed(path: Path) -> "torch.Tensor":
    """A source file as ``develop`` makes it with its defaults, (1, 3, H, W) in linear light: a JPEG or
    TIFF is decoded sRGB-encoded, and its curve is undone (read as linear, it counted twice in every
    grade). For the benches and the networks' sample makers; ``loupe run`` develops with the preset's."""
    import torch

    from tasks.develop import DevelopParams, develop

    decoded = read_source(path)
    pixels = torch.from_numpy(np.ascontiguousarray(decoded.pixels.transpose(2, 0, 1)))[None]
    return develop(pixels, decoded.transfer, DevelopParams()).image


def _check_budget(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"{width}x{height} ({_mp(width * height)} MP) exceeds the {_mp(max_pixels)} MP pixel budget")


def _mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:,.0f}" if mp >= 10 else f"{mp:.3g}"


def _one_line(exc: Exception) -> str:
    arg = exc.args[0] if len(exc.args) == 1 else None
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(exc)  # rawpy's are bytes
    return " ".join(text.split()) or "no detail"


def _read_raw(path: Path, half_size: bool, max_pixels: int, grey: bool = False) -> Decoded:
    import rawpy

    # imread only parses the header; LibRaw unpacks on postprocess. The budget counts the
    # whole sensor (raw_width x raw_height, margins included): that is what unpacking allocates.
    with rawpy.imread(str(path)) as raw:
        _check_budget(raw.sizes.raw_width, raw.sizes.raw_height, max_pixels)
        try:
            luminance = _bayer_luminance(raw) if grey and half_size else None
            if luminance is not None:
                return Decoded(luminance[..., None], "linear", "raw", reduced=True)
            # Linear output in sRGB primaries with the camera's as-shot white
            # balance; colour cast is the neutralize stage's job, not LibRaw's.
            rgb = raw.postprocess(
                gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True,
                output_color=rawpy.ColorSpace.sRGB, half_size=half_size,
                demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, adjust_maximum_thr=0.0,
            )
        except (rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError) as exc:
            raise MemoryError(str(exc)) from exc  # what LibRaw raises when a memory cap bites
    return Decoded(_scaled(rgb, 65535.0), "linear", "raw", reduced=half_size)


# LibRaw's ``flip`` (dcraw's: 3 = 180 degrees, 5 = 90 counter-clockwise, 6 = 90 clockwise) as np.rot90 turns
_TURNS = {0: 0, 3: 2, 5: 1, 6: -1}
_LUMINANCE = np.array(LUMINANCE, np.float32)


def _bayer_luminance(raw) -> np.ndarray | None:
    """(H/2, W/2) float32 linear luminance of a 2x2 Bayer mosaic, oriented: what LibRaw's half-size decode
    gives, weighted to luminance, without its colour pipeline: each quad's red, mean green and blue,
    black-subtracted, scaled to the white level, white-balanced as shot (smallest multiplier 1, as LibRaw
    does) and clipped, then weighted by the luminance row of the camera-to-sRGB matrix. A 24 MP DNG's
    survey frame 0.25 -> 0.14 s. None for another sensor (X-Trans, Foveon, a scanner's RGB), an odd
    visible size or a flip LibRaw does not make by quarter turns: the caller decodes those in full colour."""
    import rawpy

    s = raw.sizes
    if raw.raw_type != rawpy.RawType.Flat or s.flip not in _TURNS or s.height % 2 or s.width % 2:
        return None
    names = raw.color_desc.decode(errors="replace")
    quad = [(i, j, raw.raw_color(s.top_margin + i, s.left_margin + j)) for i in (0, 1) for j in (0, 1)]
    rgb = ["RGB".find(names[c]) for _, _, c in quad]        # the channel each pixel of a quad sees
    if sorted(rgb) != [0, 1, 1, 2]:
        return None
    balance = np.asarray(raw.camera_whitebalance, np.float32)
    gains = np.array([balance[quad[rgb.index(k)][2]] for k in range(3)], np.float32)
    gains = gains / gains.min() if (gains > 0).all() else np.ones(3, np.float32)
    matrix = np.asarray(raw.color_matrix, np.float32)[:, :3]
    weights = (_LUMINANCE @ matrix if matrix.any() else _LUMINANCE) * np.array([1, 0.5, 1], np.float32)
    black, mosaic = np.asarray(raw.black_level_per_channel, np.float32), raw.raw_image_visible
    y = np.zeros((s.height // 2, s.width // 2), np.float32)
    for (i, j, c), k in zip(quad, rgb):
        plane = (mosaic[i::2, j::2].astype(np.float32) - black[c]) * (gains[k] / (raw.white_level - black[c]))
        y += weights[k] * np.clip(plane, 0, 1, out=plane)
    return np.ascontiguousarray(np.rot90(np.clip(y, 0, 1, out=y), _TURNS[s.flip]))


def _read_raster(path: Path, max_pixels: int, half_size: bool = False) -> Decoded:
    # Our budget, checked right after the lazy open, is the authority here; Pillow's
    # warning would only pre-empt it with a message that lacks the size.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    with im:
        _check_budget(*im.size, max_pixels)  # header only: nothing is decoded yet
        # Pillow opens 16-bit RGB PNGs and TIFFs as 8-bit "RGB": read those elsewhere
        if im.format == "PNG" and _png_bit_depth(path) == 16:
            return _read_png16(path, _orientation(im))
        if im.format == "TIFF":
            deep = _read_tiff_deep(path, max_pixels, _orientation(im))
            if deep is not None:
                return deep
        full = im.size
        if half_size and im.format == "JPEG":   # libjpeg scales in the DCT: a 24 MP frame's decode 4x less work
            im.draft(None, ((full[0] + 1) // 2, (full[1] + 1) // 2))
        im.load()  # raises on a truncated file (LOAD_TRUNCATED_IMAGES is False)
        reduced = im.size != full
        im = ImageOps.exif_transpose(im)
        icc = im.info.get("icc_profile")
        if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            im = im.convert("RGB")  # CMYK (Adobe's inverted JPEGs included), YCbCr, I, F...
        if icc and im.mode in ("RGB", "RGBA"):
            im = _to_srgb(im.convert("RGB"), icc)
        rgb = _scaled(np.asarray(im.convert("RGB")), 255.0)
    return Decoded(rgb, "srgb", "raster", reduced=reduced)


def _orientation(im: Image.Image) -> int:
    # a PNG's getexif() decodes the whole image to look for a late eXIf chunk: ask only if one was seen
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    return int(im.getexif().get(_ORIENTATION, 1))


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:  # signature (8), IHDR length and type (8), width, height (8)
        f.seek(24)
        return f.read(1)[0]


def _read_png16(path: Path, orientation: int) -> Decoded:
    """16-bit PNG (grey, grey+alpha, RGB, RGBA) via OpenCV: values / 65535, alpha dropped."""
    import cv2

    try:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # any depth and channels; EXIF not applied
    except cv2.error as exc:
        if exc.code == cv2.Error.StsNoMem:
            raise MemoryError(str(exc)) from exc
        raise
    if arr is None:  # OpenCV returns None for a truncated or corrupt file
        raise UnreadableSource("OpenCV could not decode this PNG (truncated or corrupt)")
    if arr.ndim == 3:
        arr = arr[..., 2::-1] if arr.shape[2] >= 3 else arr[..., 0]  # BGR(A) -> RGB
    return Decoded(_apply_orientation(_rgb_float(arr), orientation), "srgb", "raster")


def _read_tiff_deep(path: Path, max_pixels: int, orientation: int) -> Decoded | None:
    """Decode a TIFF with more than 8 bits a sample (None: leave it to Pillow)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_budget(page.imagewidth, page.imagelength, max_pixels)
        if page.bitspersample <= 8:
            return None
        arr = page.asarray()
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and arr.ndim == 3:
            arr = np.moveaxis(arr, 0, -1)
    return Decoded(_apply_orientation(_rgb_float(arr), orientation), "srgb", "raster")


def _rgb_float(arr: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) integers or floats -> float32 (H, W, 3) in [0, 1]."""
    if arr.ndim == 3 and arr.shape[2] < 3:
        arr = arr[..., 0]  # grey + alpha
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return _scaled(arr[..., :3], float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0)


def _scaled(arr: np.ndarray, scale: float) -> np.ndarray:
    """float32 copy divided in place: one full-size float array at the peak, not two."""
    out = np.array(arr, dtype=np.float32, order="C")
    out /= np.float32(scale)
    return out


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """What ImageOps.exif_transpose does, for arrays Pillow cannot hold (16-bit RGB)."""
    if orientation in (5, 6, 7, 8):
        arr = arr.swapaxes(0, 1)
    if orientation in (2, 3, 6, 7):
        arr = arr[:, ::-1]
    if orientation in (3, 4, 7, 8):
        arr = arr[::-1]
    return np.ascontiguousarray(arr)


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    """Convert from an embedded profile (e.g. Adobe RGB) to sRGB."""
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
        return im
    return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")


# --- writing -------------------------------------------------------------

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
