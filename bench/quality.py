"""Cut-out and colour quality of Loupe's stages on a fixed simulator set.

    python bench/quality.py                 # 5 pieces x 4 backdrops x 2 seeds at 1200x800
    python bench/quality.py --seeds 1 --size 600 400   # quick look

Runs ``neutralize -> cutout -> background(white)`` on in-memory simulator
scenes (the camera's linear RGB, cast, uneven light, defects and noise
included) and grades them against the simulator's truth. Prints one row per
backdrop x piece and one per backdrop. Columns:

- ``iou``: mask IoU, alpha > 0.5 vs the true alpha > 0.5.
- ``thin_f``: boundary F-measure (1 px tolerance) restricted to structures at
  most 4 px wide in the truth (chain wire, prong tips, thin rims).
- ``hole_rec``: share of enclosed background (ring interiors, gaps between
  links) that the mask leaves as background.
- ``halo``: mean CIEDE2000 between Loupe's white composite and the true
  composite (clean piece over white with the true alpha) in the 3 px band
  around the true edge: fringes, halos and chopped edges all raise it.
- ``white``: share of true-background pixels more than 3 px from the piece
  that are exactly (255, 255, 255) in the 8-bit export.
- ``de_piece``: mean CIEDE2000 of the neutralized piece vs the true neutral
  render, over the piece interior. Exposure and the light's fall-off are
  removed with the truth first (neither is a colour cast).
- ``s_per_mp``: seconds per megapixel for the three stages.

``--known-light`` gives neutralize the scene's light, as a studio does for a
whole shoot from a grey card (``[stages.neutralize] kelvin`` in shoot.toml):
the way to true colour on coloured paper and desks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.simulator import BACKGROUNDS, PIECES, lighting_gain, render_scene  # noqa: E402
from tasks.color import delta_e2000, linear_to_srgb, rgb_to_lab  # noqa: E402
from tasks.frame import Frame  # noqa: E402
from tasks.pipeline import STAGE_NAMES, run_stages, stage_params  # noqa: E402

# the stages graded here; the surface retouch in between is left out
SKIP = tuple(n for n in STAGE_NAMES if n not in ("neutralize", "cutout", "background"))
COLUMNS = ["iou", "thin_f", "hole_rec", "halo", "white", "de_piece", "s_per_mp"]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def thin_zone(truth: np.ndarray, max_width: int = 4) -> np.ndarray:
    """Truth structures at most ``max_width`` px wide (what an opening of that size erases), grown by 2 px."""
    t = truth.astype(np.uint8)
    opened = cv2.morphologyEx(t, cv2.MORPH_OPEN, _disk(max_width // 2 + 1))
    thin = (t > 0) & (opened == 0)
    return cv2.dilate(thin.astype(np.uint8), _disk(2)) > 0


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0


def boundary_f(pred: np.ndarray, truth: np.ndarray, zone: np.ndarray, tolerance: int = 1) -> float:
    """BF score: boundary precision/recall within ``tolerance`` px, counted inside ``zone``."""
    bp, bt = _boundary(pred) & zone, _boundary(truth) & zone
    if not bt.any():
        return float("nan")
    if not bp.any():
        return 0.0
    near_t = cv2.dilate(_boundary(truth).astype(np.uint8), _disk(tolerance)) > 0
    near_p = cv2.dilate(_boundary(pred).astype(np.uint8), _disk(tolerance)) > 0
    precision = (bp & near_t).sum() / bp.sum()
    recall = (bt & near_p).sum() / bt.sum()
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def enclosed_background(truth: np.ndarray) -> np.ndarray:
    """Background pixels the piece encloses (flood fill from the frame border cannot reach them)."""
    t = truth.astype(np.uint8)
    padded = np.pad(1 - t, 1, constant_values=1)
    reach = padded.copy()
    cv2.floodFill(reach, None, (0, 0), 2)
    return (reach[1:-1, 1:-1] == 1)


def hole_recall(pred: np.ndarray, truth: np.ndarray) -> float:
    holes = enclosed_background(truth)
    # ignore the 1 px next to the metal: that is the edge's business, not the hole's
    holes &= cv2.dilate(truth.astype(np.uint8), _disk(1)) == 0
    return float((~pred[holes]).mean()) if holes.any() else float("nan")


def _lab(rgb: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float())


def delta_e_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return delta_e2000(_lab(a), _lab(b))[0, 0].numpy()


def grade(scene, final: Frame, neutral: Frame) -> dict[str, float]:
    truth_alpha = scene.alpha
    truth = truth_alpha > 0.5
    alpha = final.alpha[0, 0].cpu().numpy()
    pred = alpha > 0.5
    h, w = truth.shape

    composite = final.image[0].permute(1, 2, 0).cpu().numpy()
    true_composite = scene.clean * truth_alpha[..., None] + (1 - truth_alpha[..., None])
    # exposure is not the cut-out's business: match the piece's overall level first
    interior = cv2.erode(truth_alpha.astype(np.float32), _disk(1)) > 0.99
    band = (cv2.dilate(truth.astype(np.uint8), _disk(3)) > 0) & (cv2.erode(truth.astype(np.uint8), _disk(3)) == 0)

    out8 = np.round(linear_to_srgb(torch.from_numpy(composite)).numpy() * 255)
    far_bg = cv2.dilate(truth.astype(np.uint8), _disk(3)) == 0
    white = float((out8[far_bg] == 255).all(axis=1).mean())

    # colour: undo exposure and light fall-off with the truth, then compare in the piece interior
    neutral_img = neutral.image[0].permute(1, 2, 0).cpu().numpy()
    fall = lighting_gain(scene.meta["lighting"], w, h)[..., None]
    corrected = neutral_img / fall
    y_true = scene.clean[interior].mean(1)
    y_out = corrected[interior].mean(1)
    gain = float(np.median(y_true / np.maximum(y_out, 1e-6)))
    corrected = np.clip(corrected * gain, 0, 1)
    de = delta_e_map(corrected, scene.clean)

    piece_colour = final.foreground[0].permute(1, 2, 0).cpu().numpy()
    matched = np.clip(piece_colour / fall * gain, 0, 1) * alpha[..., None] + (1 - alpha[..., None])
    halo = delta_e_map(matched, true_composite)[band].mean()
    return {
        "iou": mask_iou(pred, truth),
        "thin_f": boundary_f(pred, truth, thin_zone(truth)),
        "hole_rec": hole_recall(pred, truth),
        "halo": float(halo),
        "white": white,
        "de_piece": float(de[interior].mean()),
    }


def error_tile(scene, final: Frame) -> np.ndarray:
    """Source | Loupe's result | mask errors (white = right, red = piece missed, blue = backdrop taken)."""
    src = (linear_to_srgb(torch.from_numpy(scene.source)).numpy() * 255).astype(np.uint8)
    out = (linear_to_srgb(final.image[0].permute(1, 2, 0).cpu()).numpy() * 255).astype(np.uint8)
    truth = scene.alpha > 0.5
    pred = final.alpha[0, 0].cpu().numpy() > 0.5
    err = np.full(src.shape, 40, np.uint8)
    err[truth & pred] = 255
    err[truth & ~pred] = (255, 40, 40)
    err[~truth & pred] = (60, 110, 255)
    return np.concatenate([src, out, err], 1)


def run_case(piece: str, background: str, seed: int, size: tuple[int, int], device: str,
             tiles: list | None = None, known_light: bool = False) -> dict:
    rng = np.random.default_rng([seed, PIECES.index(piece), BACKGROUNDS.index(background)])
    scene = render_scene(rng, size, piece=piece, background=background)
    # known light: what a studio sets per shoot from a grey card ([stages.neutralize] kelvin)
    light = {"neutralize": {"kelvin": scene.meta["illuminant"]["kelvin"]}} if known_light else {}
    params = stage_params(light, {"mode": "white"})
    frame = Frame(torch.from_numpy(scene.source.transpose(2, 0, 1).copy())[None].to(device))
    t0 = time.perf_counter()
    frame, neutral, _ = run_stages(frame, params, SKIP)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"background": background, "piece": piece, "seed": seed, "metal": scene.meta["metal"],
           "kelvin": round(scene.meta["illuminant"]["kelvin"]), "flags": ",".join(frame.flags)}
    row.update(grade(scene, frame, neutral))
    row["s_per_mp"] = seconds / (size[0] * size[1] / 1e6)
    if tiles is not None:
        tiles.append(error_tile(scene, frame))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=2, help="scenes per backdrop x piece")
    ap.add_argument("--size", type=int, nargs=2, default=(1200, 800), metavar=("W", "H"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backgrounds", nargs="*", default=list(BACKGROUNDS), choices=BACKGROUNDS)
    ap.add_argument("--pieces", nargs="*", default=list(PIECES), choices=PIECES)
    ap.add_argument("--known-light", action="store_true", help="tell neutralize the shoot's light (grey-card workflow)")
    ap.add_argument("--csv", type=Path, help="also write every scene's row here")
    ap.add_argument("--sheet", type=Path, help="write a PNG of every scene: source | result | mask errors")
    args = ap.parse_args(argv)

    tiles = [] if args.sheet else None
    rows = [run_case(p, b, s, tuple(args.size), args.device, tiles, args.known_light)
            for b in args.backgrounds for p in args.pieces for s in range(args.seeds)]
    if args.sheet:
        cv2.imwrite(str(args.sheet), cv2.cvtColor(np.concatenate(tiles, 0), cv2.COLOR_RGB2BGR))
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    by_case = table.groupby(["background", "piece"], sort=False)[COLUMNS].mean()
    by_background = table.groupby("background", sort=False)[COLUMNS].mean()
    pd.set_option("display.width", 160)
    print(f"{len(table)} scenes at {args.size[0]}x{args.size[1]} on {args.device}\n")
    print(by_case.round(3).to_string())
    print()
    print(by_background.round(3).to_string())
    print()
    print("all:", table[COLUMNS].mean().round(3).to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
