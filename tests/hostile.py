"""A hostile shoot: the files a real user's folder can hold, each with the outcome Loupe owes it.

    from hostile import make_hostile_shoot, is_upright
    expected = make_hostile_shoot(folder)     # {file name: "ok" | "unreadable" | "too_large"}

- "ok": must be processed. Small (400x300, or 300x400 as stored for EXIF-rotated files)
  simulator renders in every format a camera or an editor writes: DNG, CMYK JPEG,
  16-bit RGB/grey PNG, 8-bit grey, grey+alpha, RGBA and palette PNG, EXIF orientations
  3, 6 and 8, and awkward names (unicode and spaces, ';' and ',').
- "unreadable": refused as unreadable (truncated DNG and JPEG, an empty .jpg, text named .dng).
- "too_large": refused by the pixel budget from the header alone (a PNG declaring
  100000x100000 with a 1-row IDAT, a 400 KB PNG of 12000x12000 zeros, a JPEG whose SOF
  declares 30000x20000). Decoding any of them would take gigabytes.

Folder-level hostility (symlinks, subfolders, hidden files) is the caller's to add.

EXIF-rotated files (names in ``EXIF_ROTATED``) hold pixels stored rotated, with the tag
that turns them back; upright they are landscape with a dark square marker in the
top-left corner: ``is_upright(pixels)`` checks exactly that, on a decoded (H, W, 3) array.
Generation is deterministic (same bytes every run) and takes about a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SIZE = (400, 300)  # (width, height) of every "ok" image, upright
MARKER = 40        # side of the dark top-left marker in EXIF-rotated images

# orientation tag -> how the stored pixels were made from the upright image
# (the inverse of what a viewer applies: 6 means "rotate 90 degrees clockwise to view")
_STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
EXIF_ROTATED = {f"EXIF{o}01_front.jpg": o for o in _STORE}


def make_hostile_shoot(folder: Path) -> dict[str, str]:
    """Write the hostile corpus into ``folder``; return {file name: expected outcome}."""
    from models.simulator import render_image
    from models.simulator.scene import linear_to_srgb
    from models.simulator.writers import write_dng

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        out[name] = outcome

    # distinct renders, so no two files share a checksum (the catalog keys on it)
    renders = [render_image(20260, k, SIZE) for k in range(4)]
    srgb = [linear_to_srgb(r.source) for r in renders]          # float (H, W, 3) in [0, 1]
    rgb8 = [np.round(s * 255).astype(np.uint8) for s in srgb]
    rgb16 = [np.round(s * 65535).astype(np.uint16) for s in srgb]

    # --- ok ---------------------------------------------------------------
    write_dng(folder / "DNG01_front.dng", renders[0].source)
    out["DNG01_front.dng"] = "ok"
    dng = (folder / "DNG01_front.dng").read_bytes()
    put("CMYK01_front.jpg", _pil(Image.fromarray(rgb8[1]).convert("CMYK"), "JPEG", quality=95), "ok")
    ok, png16 = cv2.imencode(".png", np.ascontiguousarray(rgb16[2][..., ::-1]))  # cv2 writes BGR
    assert ok
    put("PNG16RGB01_front.png", png16.tobytes(), "ok")
    grey16 = rgb16[3].mean(axis=2).round().astype(np.uint16)
    put("PNG16GREY01_front.png", _pil(Image.fromarray(grey16), "PNG"), "ok")
    grey8 = Image.fromarray(rgb8[3]).convert("L")
    put("PNGGREY01_front.png", _pil(grey8, "PNG"), "ok")
    alpha = Image.fromarray(np.full(SIZE[::-1], 255, np.uint8))
    alpha.paste(128, (0, 0, SIZE[0], 20))                        # a half-transparent strip on top
    la = grey8.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    la.putalpha(alpha)
    put("PNGLA01_front.png", _pil(la, "PNG"), "ok")
    rgba = Image.fromarray(rgb8[2]).convert("RGBA")
    rgba.putalpha(alpha)
    put("PNGRGBA01_front.png", _pil(rgba, "PNG"), "ok")
    put("PNGP01_front.png", _pil(Image.fromarray(rgb8[0]).quantize(64), "PNG"), "ok")
    for name, orientation in EXIF_ROTATED.items():
        upright = rgb8[orientation % 4].copy()
        upright[:MARKER, :MARKER] = 10
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = Image.fromarray(upright).transpose(_STORE[orientation])
        put(name, _pil(stored, "JPEG", quality=92, exif=exif.tobytes()), "ok")
    put("Bague dorée 01_front.jpg", _pil(Image.fromarray(rgb8[1]), "JPEG", quality=90), "ok")
    put("R2;x_front.jpg", _pil(Image.fromarray(rgb8[2]), "JPEG", quality=90), "ok")
    put("R3,x_front.jpg", _pil(Image.fromarray(rgb8[3]), "JPEG", quality=90), "ok")

    # --- unreadable -------------------------------------------------------
    put("TRUNC01_front.dng", dng[: len(dng) // 2], "unreadable")
    jpeg = _pil(Image.fromarray(rgb8[0]), "JPEG", quality=90)
    put("TRUNC02_front.jpg", jpeg[: len(jpeg) // 2], "unreadable")
    put("EMPTY01_front.jpg", b"", "unreadable")
    put("TEXT01_front.dng", b"This is not a raw file, it is a note about the shoot.\n" * 20, "unreadable")

    # --- too_large: tiny files whose headers promise gigabytes ---------------------
    put("BOMB01_front.png", _png(100_000, 100_000, zlib.compress(bytes(1 + 3 * 100_000))), "too_large")
    put("BOMB02_front.png", _png(12_000, 12_000, _zero_rows(12_000, 12_000)), "too_large")
    put("BOMB03_front.jpg", _jpeg_declaring(30_000, 20_000), "too_large")
    return out


def is_upright(pixels: np.ndarray) -> bool:
    """True if an EXIF-rotated corpus image is shown upright: landscape, marker top-left."""
    h, w = pixels.shape[:2]
    if h >= w:
        return False
    grey = np.asarray(pixels, np.float32).mean(axis=2)
    m = MARKER // 2  # inside the marker, clear of JPEG ringing at its edge
    corners = [grey[:m, :m], grey[:m, -m:], grey[-m:, :m], grey[-m:, -m:]]
    means = [float(c.mean()) for c in corners]
    return means[0] < 0.6 * min(means[1:])


def _pil(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit RGB PNG with the given header size and compressed data (correct CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _zero_rows(width: int, height: int) -> bytes:
    """Deflate ``height`` all-zero RGB rows (filter byte + pixels) one row at a time,
    so the 430 MB of raw scanlines never exist at once; about 420 KB out."""
    z = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    return b"".join(z.compress(row) for _ in range(height)) + z.flush()


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 16x16 baseline JPEG whose SOF0 header is patched to say width x height."""
    data = bytearray(_pil(Image.new("RGB", (16, 16), (180, 150, 60)), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")          # Pillow writes baseline: SOF0 = FF C0
    # FF C0, length (2), precision (1), height (2), width (2)
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
