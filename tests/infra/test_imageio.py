"""Export encoders keep transparency and exact white; reading sources keeps to the pixel
budget (checked from the header), refuses truncated files and reads every layout a shoot
can hold (16-bit, grey, alpha, palette, CMYK, EXIF-rotated) upright and at full precision."""

import io
import re
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from helpers import SAMPLES
from hostile import EXIF_ROTATED, is_upright, make_hostile_shoot
from PIL import Image

from infra.imageio import MAX_SOURCE_PIXELS, TooLarge, UnreadableSource, encode, read_source


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_export_keeps_alpha(fmt):
    px = np.zeros((64, 64, 4), np.uint8)
    px[16:48, 16:48] = (200, 170, 60, 255)  # an opaque gold square on full transparency
    im = Image.open(io.BytesIO(encode(px, fmt, quality=92)))
    assert im.mode == "RGBA"
    alpha = np.asarray(im)[..., 3]
    assert (alpha[:8] == 0).all() and (alpha[20:44, 20:44] == 255).all()


def test_white_jpeg_backdrop_decodes_exactly_white():
    px = np.full((64, 64, 3), 255, np.uint8)
    px[24:40, 24:40] = (120, 100, 40)
    out = np.asarray(Image.open(io.BytesIO(encode(px, "jpeg", quality=92))))
    assert (out[:16] == 255).all() and (out[:, :16] == 255).all()


# --- reading sources: pixel budget, truncation, every layout a shoot can hold ---------

MB = 1 << 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "shoot"
    return folder, make_hostile_shoot(folder)


def _outcome(path: Path, **kw) -> tuple[str, str]:
    try:
        px = read_source(path, **kw).pixels
    except TooLarge as exc:
        return "too_large", str(exc)
    except UnreadableSource as exc:
        return "unreadable", str(exc)
    assert px.dtype == np.float32 and px.ndim == 3 and px.shape[2] == 3
    assert 0.0 <= px.min() and px.max() <= 1.0
    return "ok", ""


def test_hostile_corpus_gets_the_outcome_each_file_is_owed(hostile):
    folder, expected = hostile
    assert set(expected.values()) == {"ok", "unreadable", "too_large"}
    got = {name: _outcome(folder / name) for name in expected}
    assert {name: o for name, (o, _) in got.items()} == expected
    for name, (_, message) in got.items():  # the manifest shows it: one line, no traceback
        assert "\n" not in message and "Traceback" not in message, name


def _status_bytes(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1]) * 1024


def test_pixel_budget_is_read_from_the_header_without_decoding(hostile):
    folder, expected = hostile
    bombs = [name for name, o in expected.items() if o == "too_large"]
    try:  # reset the peak RSS (VmHWM) to the current RSS, so the peak below is this test's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss_before, peak_before = _status_bytes("VmRSS"), _status_bytes("VmHWM")
    # A regression must fail here, not decode 12 GB on a shared machine: cap this
    # process's data for the duration (soft limit only, restored after).
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (_status_bytes("VmData") + 1024 * MB, hard))
    try:
        t0 = time.perf_counter()
        messages = {}
        for name in bombs:
            with pytest.raises(TooLarge) as info:
                read_source(folder / name)
            messages[name] = str(info.value)
        elapsed = time.perf_counter() - t0
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    growth = _status_bytes("VmHWM") - (rss_before if peak_before == rss_before else peak_before)
    assert growth < 200 * MB, f"peak RSS grew {growth // MB} MB"
    assert elapsed < 1.0
    assert messages["BOMB02_front.png"] == "12000x12000 (144 MP) exceeds the 64 MP pixel budget"
    assert messages["BOMB03_front.jpg"] == "30000x20000 (600 MP) exceeds the 64 MP pixel budget"
    assert "pixel budget 64 MP" in messages["BOMB01_front.png"]  # past Pillow's own guard


def test_budget_default_lets_a_61_mp_camera_through():
    assert 9600 * 6376 <= MAX_SOURCE_PIXELS < 12000 * 12000  # A7R V sensor with margins; the PNG bomb


def _tiff16(path: Path) -> np.ndarray:
    arr = (np.arange(300 * 400 * 3, dtype=np.uint32).reshape(300, 400, 3) * 7919 % 65536).astype(np.uint16)
    tifffile.imwrite(path, arr, photometric="rgb", compression="zlib")
    return arr


@pytest.mark.parametrize("name", ["DNG01_front.dng", "PNG16RGB01_front.png", "CMYK01_front.jpg",
                                  "PNGP01_front.png", "tiff16.tif"])
def test_budget_applies_on_every_decoder_path(hostile, tmp_path, name):
    """RAW (rawpy sizes), 16-bit PNG (OpenCV), Pillow, 16-bit TIFF (tifffile): 400x300 each."""
    folder, _ = hostile
    path = folder / name
    if name == "tiff16.tif":
        path = tmp_path / name
        _tiff16(path)
    assert _outcome(path, max_pixels=400 * 300)[0] == "ok"  # the budget is inclusive
    outcome, message = _outcome(path, max_pixels=400 * 300 - 1)
    assert (outcome, message) == ("too_large", "400x300 (0.12 MP) exceeds the 0.12 MP pixel budget")


def _png16_with_exif(arr_bgr: np.ndarray, orientation: int | None = None) -> bytes:
    ok, enc = cv2.imencode(".png", arr_bgr)
    assert ok
    data = enc.tobytes()
    if orientation is None:
        return data
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # eXIf holds the TIFF structure without the "Exif\0\0" prefix
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return data[:33] + chunk + data[33:]  # right after IHDR (8 + 25 bytes)


def test_16bit_pngs_keep_their_values(tmp_path):
    levels = np.array([0, 1, 255, 256, 257, 4095, 32768, 65534, 65535], np.uint16)
    rgb = levels[np.arange(24 * 36 * 3).reshape(24, 36, 3) % len(levels)]
    want = rgb.astype(np.float32) / np.float32(65535)
    cases = {
        "rgb16.png": (_png16_with_exif(rgb[..., ::-1]), want),
        "rgba16.png": (_png16_with_exif(np.dstack([rgb[..., ::-1], rgb[..., :1]])), want),
        "grey16_cv2.png": (_png16_with_exif(rgb[..., 0]), np.repeat(want[..., :1], 3, axis=2)),
    }
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 1]).save(buf, "PNG")  # Pillow's I;16 writer
    cases["grey16_pil.png"] = (buf.getvalue(), np.repeat(want[..., 1:2], 3, axis=2))
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        got = read_source(tmp_path / name).pixels
        assert got.shape == expected.shape and np.array_equal(got, expected), name


def test_16bit_tiff_keeps_its_values(tmp_path):
    arr = _tiff16(tmp_path / "t.tif")  # Pillow would open this as 8-bit RGB
    assert np.array_equal(read_source(tmp_path / "t.tif").pixels, arr.astype(np.float32) / np.float32(65535))


def test_16bit_png_exif_orientation(tmp_path):
    rgb = np.zeros((24, 40, 3), np.uint16)
    rgb[:4, :4] = 65535  # marker top-left when upright
    stored = np.rot90(rgb, 1)  # rotated 90 degrees counter-clockwise: orientation 6 turns it back
    (tmp_path / "o6.png").write_bytes(_png16_with_exif(np.ascontiguousarray(stored[..., ::-1]), 6))
    got = read_source(tmp_path / "o6.png").pixels
    assert np.array_equal(got, rgb.astype(np.float32) / 65535)


# how to store an upright image so that EXIF orientation N turns it back upright
_STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_an_upright_image(tmp_path, orientation):
    h, w = 48, 64  # red ramps left to right, green top to bottom: every one of the 8 differs
    yy, xx = np.mgrid[0:h, 0:w]
    upright = np.dstack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 90)]).astype(np.uint8)
    im = Image.fromarray(upright)
    stored = im.transpose(_STORE[orientation]) if _STORE[orientation] is not None else im
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "o.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    got = read_source(tmp_path / "o.jpg").pixels
    assert got.shape == upright.shape
    assert np.abs(got - upright / 255.0).mean() < 0.01


def test_hostile_exif_rotated_files_read_upright(hostile):
    folder, _ = hostile
    for name in EXIF_ROTATED:
        px = read_source(folder / name).pixels
        assert px.shape == (300, 400, 3) and is_upright(px), name
        assert not is_upright(px[::-1, ::-1]) and not is_upright(px[:, ::-1])


def test_cmyk_jpeg_reads_as_its_rgb(tmp_path):
    yy, xx = np.mgrid[0:64, 0:96]
    rgb = np.dstack([xx * 2, yy * 3, 255 - xx * 2]).astype(np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)  # Adobe, inverted
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(read_source(tmp_path / "cmyk.jpg").pixels - rgb / 255.0).mean() < 0.01


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P"])
def test_8bit_png_layouts_read_as_rgb(tmp_path, mode):
    yy, xx = np.mgrid[0:32, 0:48]
    rgb = np.dstack([xx * 5, yy * 7, np.full((32, 48), 200)]).astype(np.uint8)
    im = Image.fromarray(rgb)
    want = np.asarray(im.convert("L").convert("RGB") if mode in ("L", "LA") else im) / 255.0
    im = im.convert(mode) if mode != "P" else im.quantize(256)
    im.save(tmp_path / "x.png")
    got = read_source(tmp_path / "x.png").pixels
    assert np.abs(got - want).max() < (0.06 if mode == "P" else 1e-6)


def test_half_size_decodes_a_jpeg_by_its_dct_upright_and_leaves_other_rasters_whole(tmp_path):
    """The sensor-dust survey's reduced decode: a JPEG at half each side (its DCT scaling), EXIF-rotated,
    CMYK included, matching the whole decode shrunk; a truncated one still refused; a PNG read whole."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    upright = np.dstack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 90)]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                                    # stored rotated: read back upright
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(upright).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(upright).save(tmp_path / "p.png")
    shrunk = cv2.resize(upright, (w // 2, h // 2), interpolation=cv2.INTER_AREA) / 255.0
    for name in ("r.jpg", "cmyk.jpg"):
        whole, half = read_source(tmp_path / name), read_source(tmp_path / name, half_size=True)
        assert not whole.reduced and whole.pixels.shape == (h, w, 3), name
        assert half.reduced and half.pixels.shape == (h // 2, w // 2, 3), name
        assert np.abs(half.pixels - shrunk).mean() < 0.01, name
    png = read_source(tmp_path / "p.png", half_size=True)
    assert not png.reduced and png.pixels.shape == (h, w, 3)
    data = (tmp_path / "r.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableSource):
        read_source(tmp_path / "t.jpg", half_size=True)


def test_truncated_jpeg_is_unreadable(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    for cut in (len(data) // 2, len(data) - 40):
        (tmp_path / "t.jpg").write_bytes(data[:cut])
        assert _outcome(tmp_path / "t.jpg")[0] == "unreadable"


def test_memory_cap_turns_an_oversized_decode_into_a_refusal(hostile):
    """Inside infra.limits.memory_cap, a decode that does not fit is refused (TooLarge), numpy's big
    allocation raises MemoryError, and the process carries on with its old limit afterwards."""
    folder, _ = hostile
    script = f"""
import sys, numpy as np
from pathlib import Path
from infra.imageio import TooLarge, read_source
from infra.limits import memory_cap
import resource
before = resource.getrlimit(resource.RLIMIT_DATA)
with memory_cap(256 * {MB}) as cap:
    assert resource.getrlimit(resource.RLIMIT_DATA)[0] == cap
    try:
        np.ones(2 * 1024 * {MB}, np.uint8); sys.exit("2 GB allocated under the cap")
    except MemoryError:
        pass
    try:  # 12000x12000 decodes to 2.1 GB: within this budget, beyond the cap
        read_source(Path({str(folder / "BOMB02_front.png")!r}), max_pixels=200_000_000)
        sys.exit("decoded")
    except TooLarge as exc:
        assert "out of memory" in str(exc), exc
    read_source(Path({str(folder / "CMYK01_front.jpg")!r}))  # and it goes on working
assert resource.getrlimit(resource.RLIMIT_DATA) == before
np.ones(1024 * {MB}, np.uint8)                              # the cap is gone
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_grey_half_size_raw_is_its_colour_decodes_luminance_upright(tmp_path, orientation):
    """The sensor-dust survey's grey decode reads a Bayer DNG's quads straight (no LibRaw colour pipeline):
    the same luminance as LibRaw's half-size decode, turned the same way; a clipped highlight stays clipped."""
    from models.simulator.writers import write_dng

    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    linear = np.dstack([0.2 + 0.6 * xx, 0.1 + 0.5 * yy, 0.3 * (1 - xx)]).astype(np.float32)
    linear[8:16, 8:24] = 1.0        # a blown highlight in one corner: the turn shows where it went
    path = write_dng(tmp_path / "r.dng", linear, orientation=orientation)
    colour, grey = read_source(path, half_size=True), read_source(path, half_size=True, grey=True)
    assert grey.reduced and grey.transfer == "linear" and grey.pixels.shape == colour.pixels.shape[:2] + (1,)
    want = colour.pixels.clip(0, 1) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert np.abs(grey.pixels[..., 0] - want).max() < 1e-4
    assert grey.pixels.shape[:2] == ((h // 2, w // 2) if orientation in (1, 3) else (w // 2, h // 2))


def test_a_sensor_that_is_no_bayer_mosaic_gets_its_colour_decode_when_grey_is_asked():
    """A scanner's RGB 'RAW' (no 2x2 colour filter) has no quads to read: the grey decode falls back to LibRaw's."""
    path = SAMPLES / "raw" / "Nikon_COOLSCAN_IV_ED_uncompressed.nef"
    if not path.exists():
        pytest.skip("../shared/samples absent")
    grey, colour = read_source(path, half_size=True, grey=True), read_source(path, half_size=True)
    assert grey.pixels.shape == colour.pixels.shape and grey.pixels.shape[2] == 3
    assert np.array_equal(grey.pixels, colour.pixels)
