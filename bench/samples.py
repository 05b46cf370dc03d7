"""Loupe's stages on the real photos in ../shared/samples.

    python bench/samples.py --sheet bench/out/samples.png             # cut-out: IoU vs drawn masks
    python bench/samples.py --retouch --sheet bench/out/retouch.png   # surface retouch on packshots

``--retouch`` runs dust, shine and gems on the already-retouched web product
photos (pave earrings with hundreds of tiny stones among them), where a good
retouch has almost nothing left to do, and prints per photo and stage the
share of piece pixels each stage changed by more than 2 levels (8-bit sRGB)
and the mean CIEDE2000 it made on the piece; its sheet shows before | after |
changed pixels (red: dust, yellow: shine, blue: gems) on a crop at full
resolution.

Prints, per photo, the mask IoU against the hand-drawn mask that comes with
it (coarse: outlines run 5-20 px past the metal, holes often filled) and the
stage flags, and writes a before | after-on-white | mask contact sheet.
The photos are internal test data with unclear licences: the sheet is
written under bench/out/ (ignored by git) and must not be published.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.color import delta_e2000, linear_to_srgb, rgb_to_lab  # noqa: E402
from tasks.frame import Frame  # noqa: E402
from tasks.ops import resize  # noqa: E402
from bench.quality import SUITES  # noqa: E402
from bench.trust import developed  # noqa: E402
from tasks.pipeline import STAGE_NAMES, run_stages, stage_params  # noqa: E402

SKIP = tuple(n for n in STAGE_NAMES if n not in SUITES["cutout"])

SAMPLES = ROOT.parent / "shared" / "samples" / "jewelry"


def sample_pairs(root: Path = SAMPLES) -> list[tuple[Path, Path | None]]:
    """(photo, mask or None) for every sample photo."""
    pairs = []
    rings = root / "rings_white_bg_with_masks"
    for img in sorted((rings / "images").glob("*")):
        mask = next((rings / "masks").glob(img.stem + ".*"), None)
        pairs.append((img, mask))
    for img in sorted((root / "hands_with_rings_masks").glob("Hand_*[0-9].jpg")):
        pairs.append((img, img.with_name(img.stem + "_mask.png")))
    for img in sorted((root / "web_product_photos").glob("*")):
        pairs.append((img, None))
    return pairs


def run_photo(path: Path, long_edge: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Before (sRGB uint8), after on white (sRGB uint8), alpha (float) and flags."""
    frame = Frame(developed(path))
    h, w = frame.image.shape[-2:]
    scale = min(1.0, long_edge / max(h, w))
    if scale < 1:
        frame = frame.replace(image=resize(frame.image, (round(h * scale), round(w * scale))))
    before = frame.image
    params = stage_params({}, {"mode": "white"})
    frame, _, _ = run_stages(frame, params, SKIP)
    return u8(before), u8(frame.image), frame.alpha[0, 0].numpy(), frame.flags


def u8(x: torch.Tensor) -> np.ndarray:
    return (linear_to_srgb(x)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def write_sheet(tiles: list[np.ndarray], path: Path) -> None:
    """Stack RGB tiles of any width into one PNG, separated by a dark gap."""
    width = max(t.shape[1] for t in tiles)
    sheet = np.concatenate([np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0)), constant_values=40) for t in tiles], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"sheet: {path}")


def retouch_photo(path: Path, long_edge: int) -> tuple[dict, np.ndarray]:
    """Per-stage changes on one photo and a before | after | changes tile (crop at full resolution)."""
    frame = Frame(developed(path))
    h, w = frame.image.shape[-2:]
    scale = min(1.0, long_edge / max(h, w))
    if scale < 1:
        frame = frame.replace(image=resize(frame.image, (round(h * scale), round(w * scale))))
    params = stage_params({}, {"mode": "white"})
    frame, _, _ = run_stages(frame, params, tuple(n for n in STAGE_NAMES if n not in ("neutralize", "cutout")))
    piece = frame.masks["piece"][0, 0].numpy() > 0.5
    row = {"photo": path.name, "size": f"{frame.image.shape[-1]}x{frame.image.shape[-2]}"}
    colours = {"dust": (255, 40, 40), "shine": (255, 220, 0), "gems": (60, 110, 255)}
    start = frame
    changes = np.zeros((*piece.shape, 3), np.uint8)
    for name in colours:
        after, _, _ = run_stages(frame, params, tuple(n for n in STAGE_NAMES if n != name))
        moved = np.abs(u8(after.image).astype(int) - u8(frame.image).astype(int)).max(2) > 2
        de = delta_e2000(rgb_to_lab(frame.image.clamp(0, 1)), rgb_to_lab(after.image.clamp(0, 1)))[0, 0].numpy()
        row[f"{name}_px"] = float(moved[piece].mean()) if piece.any() else 0.0
        row[f"{name}_de"] = float(de[piece].mean()) if piece.any() else 0.0
        changes[moved] = colours[name]
        frame = after
    row["total_px"] = float((changes.max(2) > 0)[piece].mean()) if piece.any() else 0.0
    row["defects_px"] = int((frame.masks["defects"][0, 0].numpy() > 0.5).sum())
    # a full-resolution crop around the piece's busiest part (most changed pixels, else its centre)
    edge = min(480, *piece.shape)
    weight = cv2.boxFilter((changes.max(2) > 0).astype(np.float32) + piece * 1e-3, -1, (edge // 2, edge // 2))
    cy, cx = np.unravel_index(np.argmax(weight), weight.shape)
    y0, x0 = int(np.clip(cy - edge // 2, 0, piece.shape[0] - edge)), int(np.clip(cx - edge // 2, 0, piece.shape[1] - edge))
    crop = (slice(y0, y0 + edge), slice(x0, x0 + edge))
    tile = np.concatenate([u8(start.image)[crop], u8(frame.image)[crop], changes[crop]], 1)
    return row, tile


def main_retouch(args) -> int:
    import pandas as pd

    photos = sorted((SAMPLES / "web_product_photos").glob("*"))
    if not photos:
        print(f"no web product photos under {SAMPLES}")
        return 1
    rows, tiles = [], []
    for path in photos:
        row, tile = retouch_photo(path, args.long_edge)
        rows.append(row)
        tiles.append(tile)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    write_sheet(tiles, args.sheet)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sheet", type=Path, default=ROOT / "bench" / "out" / "samples.png")
    ap.add_argument("--long-edge", type=int, default=1600, help="photos are resized to this first")
    ap.add_argument("--tile", type=int, default=300, help="height of one tile in the sheet")
    ap.add_argument("--retouch", action="store_true", help="grade the surface retouch on the web product photos")
    args = ap.parse_args(argv)
    if args.retouch:
        return main_retouch(args)
    pairs = sample_pairs()
    if not pairs:
        print(f"no samples under {SAMPLES}")
        return 1
    rows = []
    print(f"{'photo':52s} {'iou':>6s}  flags")
    for path, mask_path in pairs:
        before, after, alpha, flags = run_photo(path, args.long_edge)
        ours = alpha > 0.5
        iou = ""
        overlay = np.repeat((ours * 255).astype(np.uint8)[..., None], 3, 2)
        if mask_path is not None and mask_path.exists():
            truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            truth = cv2.resize(truth, ours.shape[::-1], interpolation=cv2.INTER_NEAREST) >= 128
            iou = f"{np.logical_and(ours, truth).sum() / max(np.logical_or(ours, truth).sum(), 1):.3f}"
            overlay[truth & ~ours] = (255, 60, 60)   # in the drawn mask only
            overlay[~truth & ours] = (60, 110, 255)  # in Loupe's only
        print(f"{path.parent.name + '/' + path.name:52s} {iou:>6s}  {','.join(flags)}")
        scale = args.tile / before.shape[0]
        row = [cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for x in (before, after, overlay)]
        rows.append(np.concatenate(row, 1))
    write_sheet(rows, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
