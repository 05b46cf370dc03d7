"""Cut-out, colour and surface-retouch quality of Loupe's stages on a fixed simulator set.

    python bench/quality.py                 # 5 pieces x 4 backdrops x 2 seeds at 1200x800
    python bench/quality.py --seeds 1 --size 600 400   # quick look
    python bench/quality.py --suite retouch # dust, shine, gems graded on the same scenes
    python bench/quality.py --world wide    # the simulator's wide world (6 pieces x 8 backdrops)
    python bench/quality.py --plate         # each scene with its clean plate (the cut-out's plate path)

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

``--suite retouch`` runs ``neutralize -> cutout -> dust -> shine -> gems``
and grades what the surface retouch did (columns):

- ``recall``: share of simulated specks, lint fibres and scratches on the
  piece whose pixels the ``defects`` mask covers at least half of
  (``recall_bg`` the same on the backdrop; ``fp_rec`` fingerprint haze).
  Only visible defects count: those that change the truth-scaled sRGB by at
  least ``VISIBLE`` on average over their pixels (a grey speck on dark grey
  metal, a light scratch on a highlight are invisible: nothing to retouch);
  ``hidden`` is the share left out for that.
- ``altered``: share of design features (pave stones, milgrain beads,
  engraved lines, prong tips, chain wire; the simulator's details mask,
  one feature per connected component) with more than 10% of their pixels
  in the defects mask, i.e. repainted.
- ``ssim``: SSIM of the retouched piece interior vs the clean truth (sRGB
  luminance, Gaussian window 1.5 px; exposure and light fall-off matched
  first); ``ssim_in`` the same for the input, for scale. The interior is
  where both the truth and Loupe's matte are opaque: pixels the cut-out
  missed are graded by the cutout suite.
- ``hf``: high-frequency energy (luminance minus its 2 px Gaussian blur) of
  the retouched piece interior over the truth's, defect pixels excluded.
- ``hue_metal`` / ``hue_stone``: chroma-weighted mean |hue change| in degrees
  (CIELAB) that the retouch made on metal / stone pixels.
- ``clip_in`` / ``clip_out``: share of piece pixels with a channel at 1.0
  before and after.
- ``s_per_mp``: seconds per megapixel for dust + shine + gems.

``--zoom K`` grades the same scenes seen at K times the resolution: every layer of the
rendered scene (source, truth, masks, plate) is enlarged K times (cubic for images, nearest for
labels), so specks, pave and chain wire are K times as many pixels across, as on a 24 MP back
where the default 1200 x 800 has them at 1.

``--known-light`` gives neutralize the scene's light, as a studio does for a
whole shoot from a grey card (``[stages.neutralize] kelvin`` in shoot.toml):
the way to true colour on coloured paper and desks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.review import ReviewError, parse_set  # noqa: E402
from models.simulator import BACKGROUNDS, PIECES, lighting_gain, render_scene  # noqa: E402
from models.simulator.studio import WIDE_BACKDROPS, WIDE_PIECES  # noqa: E402
from qa.metrics import hue_shift  # noqa: E402
from tasks import regions  # noqa: E402
from tasks.color import LUMINANCE, delta_e2000, linear_to_srgb, rgb_to_lab  # noqa: E402
from tasks.frame import Frame  # noqa: E402
from tasks.pipeline import STAGE_NAMES, run_stages, stage_params  # noqa: E402

# the stages each suite grades; the others are skipped
WORLDS = {"default": (tuple(PIECES), tuple(BACKGROUNDS)), "wide": (tuple(WIDE_PIECES), tuple(WIDE_BACKDROPS))}
SUITES = {"cutout": ("neutralize", "cutout", "background"),
          "retouch": ("neutralize", "cutout", "dust", "shine", "gems")}  # fill: needs a checkpoint
COLUMNS = {"cutout": ["iou", "thin_f", "hole_rec", "halo", "white", "de_piece", "s_per_mp"],
           "retouch": ["recall", "recall_bg", "hidden", "fp_rec", "altered", "ssim", "ssim_in", "hf", "hue_metal",
                       "hue_stone", "clip_in", "clip_out", "s_per_mp"]}
SURFACE = ("dust", "shine", "gems")
VISIBLE = 0.04  # mean |sRGB change| a defect makes to count as visible (noise alone: ~0.01)


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def thin_zone(truth: np.ndarray, max_width: int = 4) -> np.ndarray:
    """Truth structures at most ``max_width`` px wide (what an opening of that size erases), grown by 2 px."""
    t = truth.astype(np.uint8)
    opened = cv2.morphologyEx(t, cv2.MORPH_OPEN, regions.disk(max_width // 2 + 1))
    thin = (t > 0) & (opened == 0)
    return cv2.dilate(thin.astype(np.uint8), regions.disk(2)) > 0


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
    near_t = cv2.dilate(_boundary(truth).astype(np.uint8), regions.disk(tolerance)) > 0
    near_p = cv2.dilate(_boundary(pred).astype(np.uint8), regions.disk(tolerance)) > 0
    precision = (bp & near_t).sum() / bp.sum()
    recall = (bt & near_p).sum() / bt.sum()
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def enclosed_background(truth: np.ndarray) -> np.ndarray:
    """Background pixels the piece encloses (``tasks.regions.holes``: what a flood fill from the frame's
    border cannot reach)."""
    return regions.holes(truth.astype(np.uint8))[1] > 0


def hole_recall(pred: np.ndarray, truth: np.ndarray) -> float:
    holes = enclosed_background(truth)
    # ignore the 1 px next to the metal: that is the edge's business, not the hole's
    holes &= cv2.dilate(truth.astype(np.uint8), regions.disk(1)) == 0
    return float((~pred[holes]).mean()) if holes.any() else float("nan")


def _lab(rgb: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float())


def delta_e_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return delta_e2000(_lab(a), _lab(b))[0, 0].numpy()


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).cpu().numpy()


def truth_scaler(image: np.ndarray, scene, where: np.ndarray):
    """A function that divides the light's fall-off out of an image and applies the exposure gain
    that matches ``image`` to the truth over ``where``.

    Neither is a colour or retouch error, so grading starts from the truth's scale."""
    h, w = where.shape
    fall = lighting_gain(scene.meta["lighting"], w, h)[..., None]
    gain = float(np.median(scene.clean[where].mean(1) / np.maximum((image / fall)[where].mean(1), 1e-6)))
    return lambda x: x / fall * gain


def truth_scale(image: np.ndarray, scene, where: np.ndarray) -> np.ndarray:
    """``image`` on the truth's scale (see :func:`truth_scaler`)."""
    return truth_scaler(image, scene, where)(image)


def grade_cutout(scene, final: Frame, neutral: Frame) -> dict[str, float]:
    truth_alpha = scene.alpha
    truth = truth_alpha > 0.5
    alpha = final.alpha[0, 0].cpu().numpy()
    pred = alpha > 0.5

    composite = _hwc(final.image)
    true_composite = scene.clean * truth_alpha[..., None] + (1 - truth_alpha[..., None])
    interior = cv2.erode(truth_alpha.astype(np.float32), regions.disk(1)) > 0.99
    t8 = truth.astype(np.uint8)
    band = (cv2.dilate(t8, regions.disk(3)) > 0) & (cv2.erode(t8, regions.disk(3)) == 0)

    out8 = np.round(linear_to_srgb(torch.from_numpy(composite)).numpy() * 255)
    far_bg = cv2.dilate(truth.astype(np.uint8), regions.disk(3)) == 0
    white = float((out8[far_bg] == 255).all(axis=1).mean())

    # colour: undo exposure and light fall-off with the truth, then compare in the piece interior
    neutral_img = _hwc(neutral.image)
    to_truth = truth_scaler(neutral_img, scene, interior)
    de = delta_e_map(np.clip(to_truth(neutral_img), 0, 1), scene.clean)

    matched = np.clip(to_truth(_hwc(final.foreground)), 0, 1) * alpha[..., None] + (1 - alpha[..., None])
    halo = delta_e_map(matched, true_composite)[band].mean()
    return {
        "iou": mask_iou(pred, truth),
        "thin_f": boundary_f(pred, truth, thin_zone(truth)),
        "hole_rec": hole_recall(pred, truth),
        "halo": float(halo),
        "white": white,
        "de_piece": float(de[interior].mean()),
    }


def _components(mask: np.ndarray) -> list[np.ndarray]:
    n, lab, _, _ = regions.parts(mask.astype(np.uint8))
    return [lab == k for k in range(1, n)]


def _covered(parts: list[np.ndarray], found: np.ndarray, share: float) -> list[bool]:
    return [bool(found[p].mean() >= share) for p in parts]


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """SSIM (Wang et al. 2004, doi:10.1109/TIP.2003.819861) of two [0, 1] images, Gaussian window."""
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), sigma)  # noqa: E731
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))


def _srgb_y(rgb: np.ndarray) -> np.ndarray:
    y = rgb @ np.array(LUMINANCE, np.float32)
    return linear_to_srgb(torch.from_numpy(np.clip(y, 0, 1).astype(np.float32))).numpy()


def grade_retouch(scene, final: Frame, neutral: Frame) -> dict[str, float]:
    found = final.masks["defects"][0, 0].cpu().numpy() > 0.5
    on_piece = scene.alpha > 0.5
    interior = cv2.erode((scene.alpha > 0.99).astype(np.uint8), regions.disk(1)) > 0  # chains: wire is 2-4 px
    interior &= final.alpha[0, 0].cpu().numpy() >= 1.0  # cut-out misses are the cutout suite's business
    before, after = _hwc(neutral.image), _hwc(final.image)
    scaled_in = np.clip(truth_scale(before, scene, interior), 0, 1)
    srgb_in = linear_to_srgb(torch.from_numpy(scaled_in)).numpy()
    srgb_true = linear_to_srgb(torch.from_numpy(scene.clean)).numpy()
    change = np.abs(srgb_in - srgb_true).mean(2)
    parts = _components(np.isin(scene.defects, (1, 2, 3)))
    visible = [p for p in parts if change[p].mean() >= VISIBLE]
    piece_parts = [p for p in visible if on_piece[p].mean() > 0.5]
    bg_parts = [p for p in visible if on_piece[p].mean() <= 0.5]
    features = [p for k in np.unique(scene.details)[1:] for p in _components(scene.details == k)]
    y_true = _srgb_y(scene.clean)
    y_in = _srgb_y(scaled_in)
    y_out = _srgb_y(np.clip(truth_scale(after, scene, interior), 0, 1))
    # high frequencies of the design only: defects (truth) are meant to lose theirs
    clean_zone = interior & (cv2.dilate((scene.defects > 0).astype(np.uint8), regions.disk(3)) == 0)
    band = lambda y: y - cv2.GaussianBlur(y, (0, 0), 2.0)  # noqa: E731
    metal = interior & (scene.metal > 0.6)
    stone = interior & (scene.metal < 0.05)
    clipped = lambda img: float((img.max(2) >= 0.999)[on_piece].mean())  # noqa: E731
    return {
        "recall": float(np.mean(_covered(piece_parts, found, 0.5))) if piece_parts else float("nan"),
        "recall_bg": float(np.mean(_covered(bg_parts, found, 0.5))) if bg_parts else float("nan"),
        "fp_rec": float(np.mean(_covered(_components(scene.defects == 4), found, 0.5)))
        if (scene.defects == 4).any() else float("nan"),
        "altered": float(np.mean(_covered(features, found, 0.1))) if features else float("nan"),
        "hidden": 1 - len(visible) / len(parts) if parts else float("nan"),
        "n_defects": len(piece_parts), "n_features": len(features),
        "ssim": float(ssim_map(y_out, y_true)[interior].mean()),
        "ssim_in": float(ssim_map(y_in, y_true)[interior].mean()),
        "hf": float((band(y_out)[clean_zone] ** 2).sum() / max((band(y_true)[clean_zone] ** 2).sum(), 1e-9)),
        "hue_metal": hue_shift(neutral.image, final.image, torch.from_numpy(metal)[None, None]),
        "hue_stone": hue_shift(neutral.image, final.image, torch.from_numpy(stone)[None, None]),
        "clip_in": clipped(before), "clip_out": clipped(after),
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


def retouch_tile(scene, final: Frame, neutral: Frame, edge: int = 400) -> np.ndarray:
    """Piece close-up: before | after | masks (red = defect removed, yellow = truth defect missed,
    blue = design feature repainted, grey = design features kept)."""
    ys, xs = np.nonzero(scene.alpha > 0.5)
    cy, cx = int(ys.mean()), int(xs.mean())
    h, w = scene.alpha.shape
    y0, x0 = int(np.clip(cy - edge // 2, 0, max(h - edge, 0))), int(np.clip(cx - edge // 2, 0, max(w - edge, 0)))
    sl = (slice(y0, y0 + edge), slice(x0, x0 + edge))
    to8 = lambda t: (linear_to_srgb(t[0].permute(1, 2, 0).cpu().clamp(0, 1)).numpy() * 255).astype(np.uint8)  # noqa: E731
    before, after = to8(neutral.image)[sl], to8(final.image)[sl]
    found = final.masks["defects"][0, 0].cpu().numpy()[sl] > 0.5
    truth = np.isin(scene.defects[sl], (1, 2, 3, 4))
    details = scene.details[sl] > 0
    masks = (before * 0.35).astype(np.uint8)
    masks[details] = (150, 150, 150)
    masks[truth & ~found] = (255, 220, 0)
    masks[found] = (255, 40, 40)
    masks[found & details] = (60, 110, 255)
    return np.concatenate([before, after, masks], 1)


def zoomed(scene, k: int):
    """``scene`` seen at ``k`` times the resolution: images enlarged by cubic interpolation (clipped to
    their range), labels by nearest neighbour, mattes and weights linearly."""
    if k == 1:
        return scene
    big = lambda a, how: cv2.resize(a, None, fx=k, fy=k, interpolation=how)  # noqa: E731
    image = lambda a: np.clip(big(a, cv2.INTER_CUBIC), 0, None)  # noqa: E731
    return dataclasses.replace(
        scene, source=image(scene.source), clean=image(scene.clean),
        alpha=np.clip(big(scene.alpha, cv2.INTER_LINEAR), 0, 1), defects=big(scene.defects, cv2.INTER_NEAREST),
        details=big(scene.details, cv2.INTER_NEAREST), metal=big(scene.metal, cv2.INTER_LINEAR),
        layers={name: (image if layer.ndim == 3 else lambda a: big(a, cv2.INTER_LINEAR))(layer)
                for name, layer in scene.layers.items()})


def run_case(piece: str, background: str, seed: int, size: tuple[int, int], device: str,
             tiles: list | None = None, known_light: bool = False, suite: str = "cutout",
             overrides: dict | None = None, world: str = "default", plate: bool = False, zoom: int = 1) -> dict:
    pieces, backgrounds = WORLDS[world]
    rng = np.random.default_rng([seed, pieces.index(piece), backgrounds.index(background)])
    scene = zoomed(render_scene(rng, size, piece=piece, background=background, world=world, plate=plate), zoom)
    size = (size[0] * zoom, size[1] * zoom)
    # known light: what a studio sets per shoot from a grey card ([stages.neutralize] kelvin)
    stages = {name: dict(values) for name, values in (overrides or {}).items()}
    if known_light:
        stages.setdefault("neutralize", {})["kelvin"] = scene.meta["illuminant"]["kelvin"]
    params = stage_params(stages, {"mode": "white"})
    as_tensor = lambda x: torch.from_numpy(x.transpose(2, 0, 1).copy())[None].to(device)  # noqa: E731
    frame = Frame(as_tensor(scene.source),
                  plate=as_tensor(scene.layers["plate"]) if "plate" in scene.layers else None)
    skip = tuple(n for n in STAGE_NAMES if n not in SUITES[suite])
    if suite == "retouch":
        # grade against the frame the surface retouch starts from (cutout may touch edge colours)
        frame, _, _ = run_stages(frame, params, tuple(n for n in STAGE_NAMES if n not in ("neutralize", "cutout")))
        skip = tuple(n for n in STAGE_NAMES if n not in SURFACE)
    start = frame
    frame, neutral, timings = run_stages(frame, params, skip)
    neutral = start if suite == "retouch" else neutral
    if device == "cuda":
        torch.cuda.synchronize()
    timed = SURFACE if suite == "retouch" else SUITES[suite]
    row = {"background": background, "piece": piece, "seed": seed, "metal": scene.meta["metal"],
           "kelvin": round(scene.meta["illuminant"]["kelvin"]), "plate": "plate" in scene.layers,
           "flags": ",".join(frame.flags)}
    row.update(grade_retouch(scene, frame, neutral) if suite == "retouch" else grade_cutout(scene, frame, neutral))
    row["s_per_mp"] = sum(timings[n] for n in timed) / (size[0] * size[1] / 1e6)
    if tiles is not None:
        tiles.append(retouch_tile(scene, frame, neutral) if suite == "retouch" else error_tile(scene, frame))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=2, help="scenes per backdrop x piece")
    ap.add_argument("--size", type=int, nargs=2, default=(1200, 800), metavar=("W", "H"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--world", choices=list(WORLDS), default="default",
                    help="the simulator's world: default, or wide (papers, light boxes, acrylic, hard shadows, "
                         "openwork, camera noise; what the trust bench's val family tests, drawn differently)")
    ap.add_argument("--backgrounds", nargs="*", choices=sorted({*BACKGROUNDS, *WIDE_BACKDROPS}))
    ap.add_argument("--pieces", nargs="*", choices=sorted({*PIECES, *WIDE_PIECES}))
    ap.add_argument("--suite", choices=list(SUITES), default="cutout", help="what to grade")
    ap.add_argument("--zoom", type=int, default=1, help="grade the scenes enlarged this many times")
    ap.add_argument("--known-light", action="store_true", help="tell neutralize the shoot's light (grey-card workflow)")
    ap.add_argument("--plate", action="store_true",
                    help="give each scene its clean plate (the simulator renders it; none on an acrylic riser)")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="stage parameter override, e.g. --set dust.strength=0.3 (repeatable)")
    ap.add_argument("--csv", type=Path, help="also write every scene's row here")
    ap.add_argument("--sheet", type=Path, help="write a PNG of every scene: source | result | mask errors")
    args = ap.parse_args(argv)

    try:
        overrides = parse_set(args.set)       # the same STAGE.KEY=VALUE as `loupe review rerun --set`
    except ReviewError as exc:
        ap.error(str(exc))
    tiles = [] if args.sheet else None
    pieces, backgrounds = WORLDS[args.world]
    rows = [run_case(p, b, s, tuple(args.size), args.device, tiles, args.known_light, args.suite, overrides, args.world,
                     args.plate, args.zoom)
            for b in args.backgrounds or backgrounds for p in args.pieces or pieces for s in range(args.seeds)]
    if args.sheet:
        cv2.imwrite(str(args.sheet), cv2.cvtColor(np.concatenate(tiles, 0), cv2.COLOR_RGB2BGR))
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    columns = COLUMNS[args.suite]
    by_case = table.groupby(["background", "piece"], sort=False)[columns].mean()
    by_background = table.groupby("background", sort=False)[columns].mean()
    pd.set_option("display.width", 160)
    zoom = f" x{args.zoom}" if args.zoom > 1 else ""
    print(f"{len(table)} scenes at {args.size[0]}x{args.size[1]}{zoom} on {args.device}\n")
    print(by_case.round(3).to_string())
    print()
    print(by_background.round(3).to_string())
    print()
    print("all:", table[columns].mean().round(3).to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
