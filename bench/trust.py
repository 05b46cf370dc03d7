"""The studio's two numbers, on each set side by side: right first time, and escapes.

    python bench/trust.py                         # 24 images per world at 1200x800 + the real photos
    python bench/trust.py --images 8 --size 900x600 --sets train val
    python bench/trust.py --csv rows.csv --sheet sheet.png
    python bench/trust.py --from-csv rows.csv     # re-print the tables without re-running
    python bench/trust.py --sets studio --set cutout.band=3   # grade a parameter change, every shoot alike
    python bench/trust.py --sets val studio --draw 1          # other scenes of the same worlds (seeds shifted)
    python bench/trust.py --sets plates studio --light card   # the shoots' light from a grey card's frame

The sets (the validation discipline, README "Trust"):

- ``train``: the studio simulator (``models/simulator``), the world the stages,
  networks and QA thresholds were tuned on;
- ``wide``: the simulator's wide studio world (``world="wide"``: papers, light
  boxes, acrylic risers, hard shadows, white metal on white, ISO noise, JPEG);
  a training world too, so failures found there may be tuned on (not in the
  default run: ``--sets wide``);
- ``plates``: the wide world as a studio shoots it (not in the default run: ``--sets plates``):
  each scene a shoot of its own with its clean plate and its light in ``shoot.toml``, the
  plate path's training world (the ``studio`` set below judges it);
- ``val``: ``bench/valworld.py``, an independent generator (its own pieces,
  lighting, materials, backdrops, camera and seeds) that nothing is ever tuned on;
- ``studio``: the validation family as a studio shoots it: shoots of
  ``STUDIO_SHOOT`` images sharing one setup (backdrop, light, camera), each
  with its clean plate (``<shoot>_plate.jpg``) and its light in ``shoot.toml``
  (``[stages.neutralize] kelvin``, what a grey card gives);
- ``paper``: the same on the validation family's coloured papers only (beige, cream, kraft, pink,
  mint, light blue, lilac), where the light cannot be read off the backdrop: the issue's target
  for coloured paper with a plate or a known light;
- ``real``: the real photos in ``../shared/samples/jewelry`` (no colour truth;
  coarse hand-drawn masks for some), listed one by one for a person to look at.

Every set goes through the real code path: the shoot folders are written to
disk and run by ``flows.shoot.run_shoots`` (the ``loupe run`` flow: Prefect,
Ray, stages, QA suite, routing), then each image's cut-out export (RGBA PNG on
the source grid, exported or staged for review) is graded against the truth.
An image is *right* when all of these hold (the issue's definition):

- ``iou`` >= 0.95: mask IoU, alpha > 0.5 vs the true alpha > 0.5;
- ``holes`` >= 0.90: share of the true enclosed background (ring interiors,
  link gaps, eyelets) left open;
- ``thin`` >= 0.90: share of the truth's thin structures (what a 5 px opening
  erases, in parts of >= 12 px: wire, prongs, bails, hooks) the mask keeps
  within 1 px;
- ``de_chroma`` <= 3: mean CIEDE2000 between the exported piece and the true
  neutral render after matching each pixel's luminance (exposure, fall-off
  and shine are not colour errors), piece interior;
- ``pierced`` = 0: no hole of the export (>= 9 px) where the truth has piece
  (a highlight, a stone's facet or a face cut out: IoU hardly moves, a dark
  page shows it at once);
- ``stray`` = 0: no part of the export (>= 9 px) apart from the piece where
  the truth has little of it (a blob of backdrop: JPEG blocks, a shadow or a
  speck cut out on its own; IoU hardly moves, every page shows it);
- ``lost`` <= 5%: design features (the truth's details mask, one per
  component) lost: less than half inside the mask, or their contrast below
  half of what the source showed (the retouch flattened them).

``iou_net`` is not a criterion: SegNet's mask alone on the source, graded like
``iou``, so a set shows how far the network holds apart from the rules around it.

``rft`` (right first time) is the share of all images exported *and* right;
``escapes`` the share of exported images that are not right. ``dust`` is the
share of visible specks/lint on the piece that the export no longer shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import _lab, enclosed_background, mask_iou  # noqa: E402
from flows.cli import quiet_env  # noqa: E402
from flows.review import parse_set  # noqa: E402
from infra.imageio import developed  # noqa: E402
from tasks import regions  # noqa: E402
from tasks.color import LUMINANCE, delta_e2000, linear_to_srgb, srgb_to_linear  # noqa: E402
from tasks.cutout import component_mean  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples" / "jewelry"
SEEDS = {"train": 101, "wide": 202, "plates": 303, "val": 9001, "studio": 9100, "paper": 9500}
DRAW_STEP = 100_000   # --draw k shifts every set's seed by k times this: fresh scenes of the same worlds
STUDIO_SHOOT = 6
RIGHT = {"iou": (">=", 0.95), "holes": (">=", 0.90), "thin": (">=", 0.90), "de_chroma": ("<=", 3.0),
         "lost": ("<=", 0.05), "pierced": ("<=", 0), "stray": ("<=", 0)}
PIERCED_PX = 9   # a hole or a part of the export this big that the truth does not have is seen at 1:1 on any page
VISIBLE = 0.10   # relative luminance departure a speck makes from its surroundings to count as visible


# --- the sets -----------------------------------------------------------------------------
def write_sets(root: Path, sets: list[str], images: int, size: tuple[int, int], draw: int = 0,
               light: str = "toml") -> list[Path]:
    """Write the shoot folders of each set under ``root`` (``<set>`` or ``<set>-<k>``); returns them.
    ``draw``: 0 for the sets every figure is reported on; another draws other scenes of the same worlds
    (each seed shifted by ``draw * DRAW_STEP``): the draw-to-draw spread of a figure, and a second look
    for escapes on scenes no one has seen. ``light``: how the plates and studio shoots give their light
    (``LIGHTS``)."""
    folders = []
    seed = {name: s + draw * DRAW_STEP for name, s in SEEDS.items()}
    for name in sets:
        folder = root / name
        if name in ("studio", "paper"):
            folders += write_studio_shoots(root, images, size, seed[name], light, name)
            continue
        if name == "plates":
            folders += write_plate_shoots(root, images, size, seed["plates"], light)
            continue
        if name in ("train", "wide"):
            from models.simulator import synth_shoot
            synth_shoot(folder, images, seed[name], size=size, world="default" if name == "train" else "wide")
        elif name == "val":
            from bench.valworld import write_shoot
            write_shoot(folder, images, seed[name], size=size)
        else:
            if not SAMPLES.is_dir():
                print(f"note: {SAMPLES} not found; the real set is skipped")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(SAMPLES.rglob("*")):
                if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png") and not _is_mask(path):
                    shutil.copyfile(path, folder / path.name)
        folders.append(folder)
    return folders


def set_stages(folders: list[Path], stages: dict[str, dict]) -> None:
    """Add stage parameters (``flows.review.parse_set``'s ``{stage: {key: value}}``) to each shoot's
    ``shoot.toml``, as a studio sets them, over what it holds (the studio shoots' light): the same
    ``loupe run`` grades the code with and without a change, every set alike."""
    for folder in folders:
        sidecar = folder / "shoot.toml"
        merged = tomllib.loads(sidecar.read_text()) if sidecar.exists() else {}
        assert set(merged) <= {"stages"}, f"{sidecar}: the bench writes stages only"
        for stage, values in stages.items():
            merged.setdefault("stages", {}).setdefault(stage, {}).update(values)
        # (a scalar or a list of them: JSON's form is TOML's)
        sidecar.write_text("".join(f"[stages.{stage}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                                   for stage, values in merged.get("stages", {}).items()))


def write_studio_shoots(root: Path, images: int, size: tuple[int, int], seed: int = SEEDS["studio"],
                        light: str = "toml", name: str = "studio") -> list[Path]:
    """Shoots of one setup each, with a clean plate and the light (``light``: see ``LIGHTS``); ``name``
    "paper": on the validation family's coloured papers only."""
    from bench.valworld import write_shoot

    folders = []
    for k in range(max(1, images // STUDIO_SHOOT)):
        folder = root / f"{name}-{k + 1}"
        write_shoot(folder, STUDIO_SHOOT, seed + k, size=size, setup="shared", plate=True,
                    family="paper" if name == "paper" else None)
        lit = json.loads(next((folder / "truth").glob("*/meta.json")).read_text())["lighting"]
        tint = min(max(lit["tint"], -0.03), 0.03)
        give_light(folder, light, (round(lit["kelvin"]), round(tint, 4)), lit["gains"], "jpg", size, seed + k)
        folders.append(folder)
    return folders


# how a studio shoot of the bench gives its light: its kelvin and tint in shoot.toml (what a colour meter
# or a grey card read elsewhere gives), a grey card's frame in the shoot (Loupe reads it), or nothing
# (the light read off each frame's backdrop)
LIGHTS = ("toml", "card", "none")


def give_light(folder: Path, light: str, kelvin_tint: tuple[int, float], gains: list[float], fmt: str,
               size: tuple[int, int], seed: int) -> None:
    """Give the shoot ``folder`` its light the way ``light`` says (``LIGHTS``)."""
    if light == "toml":
        set_stages([folder], {"neutralize": {"kelvin": kelvin_tint[0], "tint": kelvin_tint[1]}})
    elif light == "card":
        write_card(folder / f"{folder.name}_card.{fmt}", gains, size, seed)


def write_card(path: Path, gains: list[float], size: tuple[int, int], seed: int) -> Path:
    """A grey card filling the frame under a light of linear RGB ``gains`` (the generator's own record
    of the light it rendered), as a studio shoots it before a collection: a mid grey with the lens'
    fall-off to the corners and a camera's shot and read noise, written like the shoot's frames."""
    from models.simulator.writers import WRITERS

    rng = np.random.default_rng([seed, 0xCA4D])
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    corner = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    rgb = np.asarray(gains, np.float32) / max(gains)
    linear = (0.4 * (1 - 0.2 * corner))[..., None] * rgb
    linear += rng.standard_normal(linear.shape, dtype=np.float32) * np.sqrt(4e-6 + 1e-4 * linear)
    return WRITERS[path.suffix[1:]](path, np.clip(linear, 0, 1))


def write_plate_shoots(root: Path, images: int, size: tuple[int, int], seed: int = SEEDS["plates"],
                       light: str = "toml") -> list[Path]:
    """The wide training world as a studio shoots it: each scene a shoot of its own with its clean plate
    (the same backdrop, light and camera, empty) and its light in shoot.toml, so that the plate path
    (PlateNet, the cut-out against the plate) is tuned on a training world, and the studio set, made
    by the validation family's generator, only judges it. Acrylic risers (drawn with the piece's
    reflection, no plate) are left out."""
    from models.simulator import image_rng, render_scene, write_scene
    from models.simulator.writers import WRITERS

    folders, formats, k = [], ("dng", "jpg", "tif"), -1
    while len(folders) < images:
        k += 1
        scene = render_scene(image_rng(seed, k), size, world="wide", plate=True)
        if "plate" not in scene.layers:
            continue
        fmt = formats[len(folders) % len(formats)]
        folder = root / f"plates-{len(folders) + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        write_scene(folder, scene, k, fmt)
        WRITERS[fmt](folder / f"{folder.name}_plate.{fmt}", scene.as_written(fmt, plate=True))
        rgb = scene.meta["illuminant"]["rgb"]
        give_light(folder, light, grey_card(rgb), rgb, fmt, size, seed + k)
        folders.append(folder)
    return folders


def grey_card(light_rgb: list[float]) -> tuple[int, float]:
    """The (kelvin, tint) a grey card under a light of linear RGB ``light_rgb`` gives Loupe: its own
    reading of a uniform grey patch (the simulator's tint is not in neutralize's units)."""
    from tasks.neutralize import NeutralizeParams, estimate_illuminant

    rgb = torch.tensor(light_rgb, dtype=torch.float32)
    patch = (0.7 * rgb / rgb.max()).view(1, 3, 1, 1).expand(1, 3, 64, 64).contiguous()
    _, kelvin, tint, _ = estimate_illuminant(patch, NeutralizeParams())
    return round(kelvin), round(tint, 4)


def set_of(shoot: str) -> str:
    return shoot.split("-")[0]


def _is_mask(path: Path) -> bool:
    return path.stem.endswith("_mask") or path.parent.name == "masks" or path.stem.endswith("_alpha")


def real_mask(name: str) -> np.ndarray | None:
    """The coarse hand-drawn mask shipped with a real photo, if any (bool)."""
    stem = Path(name).stem
    for cand in (SAMPLES / "rings_white_bg_with_masks" / "masks" / f"{stem}.jpg",
                 SAMPLES / "hands_with_rings_masks" / f"{stem}_mask.png"):
        if cand.exists():
            m = cv2.imread(str(cand), cv2.IMREAD_GRAYSCALE)
            return m > 127
    return None


# --- grading --------------------------------------------------------------------------------
def read_cutout(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(linear RGB float32 HxWx3, alpha float32 HxW) of an RGBA cut-out export."""
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    scale = 65535.0 if bgra.dtype == np.uint16 else 255.0
    rgb = srgb_to_linear(torch.from_numpy(bgra[..., 2::-1].astype(np.float32) / scale)).numpy()
    return rgb, bgra[..., 3].astype(np.float32) / scale


def chroma_delta_e(out: np.ndarray, truth: np.ndarray, where: np.ndarray, shown: np.ndarray) -> float:
    """Mean CIEDE2000 over ``where`` after each output pixel is scaled to the truth's luminance.

    Both are averaged over 1.5 px first and near-black pixels are left out: sensor noise and 8-bit
    steps in the shadows are not a colour error, a cast is (it is smooth). The output's average is
    weighted by its alpha ``shown``: a transparent pixel's colour is seen by no one."""
    w = np.array(LUMINANCE, np.float32)
    weight = cv2.GaussianBlur(shown, (0, 0), 1.5)[..., None]
    out = cv2.GaussianBlur(out * shown[..., None], (0, 0), 1.5) / np.maximum(weight, 1e-6)
    truth = cv2.GaussianBlur(truth, (0, 0), 1.5)
    where = where & (truth @ w > 0.02)
    if not where.any():
        return float("nan")
    o, t = out[where], truth[where]
    o = o * ((t @ w) / np.maximum(o @ w, 1e-6))[:, None]
    return float(delta_e2000(_lab(np.clip(o, 0, 1)[:, None]), _lab(t[:, None])).mean())   # (N, 1, 3) images


def pierced(pred: np.ndarray, true: np.ndarray) -> int:
    """Holes of the export (>= ``PIERCED_PX``) where the truth has piece for most of the hole: a
    highlight, a stone's facet or a face cut out. Mask IoU hardly moves for them; over a dark or
    coloured page they are plain to see."""
    n, lab, stats = regions.holes(pred.astype(np.uint8))
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= PIERCED_PX)
    big = big[big > 0]
    return int((component_mean(lab, n, true)[big] > 0.5).sum())


def stray(pred: np.ndarray, true: np.ndarray) -> int:
    """Parts of the export (8-connected, >= ``PIERCED_PX``) where the truth has piece for less than
    half of the part: backdrop cut out on its own (JPEG blocks, a detached shadow, a speck)."""
    n, lab, stats, _ = regions.parts(pred.astype(np.uint8))
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= PIERCED_PX)
    big = big[big > 0]
    return int((component_mean(lab, n, true)[big] < 0.5).sum())


def _y(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array(LUMINANCE, np.float32)


def thin_parts(true: np.ndarray) -> np.ndarray:
    """The truth's thin structures: what an opening 5 px wide erases (wire, prongs, bails, hooks), in
    parts of at least 12 px (an opening also nicks every convex corner by a few pixels: not a part)."""
    t8 = true.astype(np.uint8)
    thin = (t8 > 0) & (cv2.morphologyEx(t8, cv2.MORPH_OPEN, regions.disk(2)) == 0)
    parts, _, _ = _parts(thin, 12)
    return np.any(parts, 0) if parts else np.zeros_like(true)


def _parts(mask: np.ndarray, min_px: int):
    n, lab, stats, _ = regions.parts(mask.astype(np.uint8))
    return [lab == k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_px], lab, stats


def features_lost(details: np.ndarray, pred: np.ndarray, out: np.ndarray, source: np.ndarray) -> float:
    """Share of design features (components of ``details``) the export lost: less than half inside
    the mask, or their contrast (std of sRGB luminance over the feature and 2 px around it, inside
    the mask) below
    half of what the camera recorded (the source: the truth is sharper than any lens)."""
    y_out, y_src = linear_to_srgb_np(_y(out)), linear_to_srgb_np(_y(source))
    lost, total = 0, 0
    for label in np.unique(details)[1:]:
        n, lab, _, _ = regions.parts((details == label).astype(np.uint8))
        for k in range(1, n):
            part = lab == k
            total += 1
            # inside: the backdrop is replaced
            around = (cv2.dilate(part.astype(np.uint8), regions.disk(2)) > 0) & pred
            lost += pred[part].mean() < 0.5 or y_out[around].std() < 0.5 * y_src[around].std()
    return lost / total if total else 0.0


def dust_removed(defects: np.ndarray, alpha: np.ndarray, source: np.ndarray, out: np.ndarray,
                 clean: np.ndarray, shown: np.ndarray) -> tuple[int, int]:
    """(removed, visible) specks/lint/scratches on the piece: a speck's relative departure from its
    1-3 px surroundings, minus the truth's, must fall below half of what the source showed. Only
    where the truth has the piece and the export shows it (``shown``: its alpha): a speck the
    cut-out dropped is the cut-out's error, and a transparent pixel's colour is seen by no one."""
    on = (alpha > 0.5) & (shown > 0.5)
    n, lab, _, _ = regions.parts(np.isin(defects, (1, 2, 3)).astype(np.uint8))
    visible = removed = 0
    ys, yo, yt = _y(source), _y(out), _y(clean)
    for k in range(1, n):
        part = lab == k
        if on[part].mean() < 0.5:
            continue
        part &= on
        p8 = part.astype(np.uint8)
        ring = (cv2.dilate(p8, regions.disk(3)) > 0) & (cv2.dilate(p8, regions.disk(1)) == 0) & on
        if ring.sum() < 4:
            continue
        rel = lambda y: float(y[part].mean() / max(y[ring].mean(), 1e-4))  # noqa: E731
        before = abs(rel(ys) - rel(yt))
        if before < VISIBLE:
            continue
        visible += 1
        removed += abs(rel(yo) - rel(yt)) < 0.5 * before
    return removed, visible


def mask_grades(pred: np.ndarray, true: np.ndarray) -> dict:
    """The criteria of ``RIGHT`` a mask alone decides (bool (H, W) masks, the cut-out's and the truth's)."""
    holes = enclosed_background(true) & (cv2.dilate(true.astype(np.uint8), regions.disk(1)) == 0)
    thin = thin_parts(true)
    near = cv2.dilate(pred.astype(np.uint8), regions.disk(1)) > 0
    return {"iou": mask_iou(pred, true), "holes": float((~pred[holes]).mean()) if holes.any() else 1.0,
            "thin": float(near[thin].mean()) if thin.any() else 1.0, "pierced": pierced(pred, true),
            "stray": stray(pred, true)}


def grade_image(cutout: Path, truth: dict, source: np.ndarray | None) -> dict:
    out, alpha = read_cutout(cutout)
    true_alpha = truth["alpha"]
    if out.shape[:2] != true_alpha.shape:
        return {"iou": 0.0, "note": f"export {out.shape[1]}x{out.shape[0]} is not the source grid"}
    pred, true = alpha > 0.5, true_alpha > 0.5
    interior = ((cv2.erode(true.astype(np.uint8), regions.disk(2)) > 0)
                & (cv2.erode(pred.astype(np.uint8), regions.disk(2)) > 0))
    row = {**mask_grades(pred, true), "de_chroma": chroma_delta_e(out, truth["clean"], interior, alpha)}
    if source is not None:
        row["lost"] = features_lost(truth["details"], pred, out, source)
        row["dust_removed"], row["dust_visible"] = dust_removed(truth["defects"], true_alpha, source, out, truth["clean"],
                                                                alpha)
    return row


def network_iou(source: np.ndarray, true_alpha: np.ndarray) -> float:
    """Mask IoU of SegNet alone (its 384 px read, probability > 0.5) on ``source`` (linear RGB as developed,
    before neutralize: ``linear_source``) against the truth: how well the network the cut-out consults (about
    shadows, enclosed regions and facets; the mask itself where the backdrop fit fails) holds on a set,
    apart from the rules around it."""
    from models.segnet import load_segnet, piece_probability

    srgb = linear_to_srgb(torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1), np.float32))[None])
    return mask_iou(piece_probability(srgb, load_segnet())[0, 0].numpy() > 0.5, true_alpha > 0.5)


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 0.55, 0.30).astype(np.float32) * np.ones(3, np.float32)


def linear_source(path: Path) -> np.ndarray:
    """``developed`` as an (H, W, 3) array."""
    return developed(path)[0].permute(1, 2, 0).numpy()


def sheet_tile(source: Path, cutout: Path | None, truth: dict | None, label: str, width: int = 360) -> np.ndarray:
    """``sheet_row`` of a source file and its cut-out export (None, or missing: no cut-out panels)."""
    cut = read_cutout(cutout) if cutout is not None and cutout.exists() else None
    return sheet_row(linear_source(source), cut, truth, label, width)


def sheet_row(src: np.ndarray, cut: tuple[np.ndarray, np.ndarray] | None, truth: dict | None, label: str,
              width: int = 360) -> np.ndarray:
    """Source | the cut-out over a checker (fringes, filled gaps and slabs show) | mask errors against
    the truth (white right, red piece missed, blue backdrop kept), with ``label`` on top. ``src``: linear
    (H, W, 3); ``cut``: its linear colour (H, W, 3) and alpha (H, W), or None."""
    h, w = src.shape[:2]
    size = (width, max(1, round(h * width / w)))
    to8 = lambda x: (np.clip(linear_to_srgb_np(x), 0, 1) * 255).astype(np.uint8)  # noqa: E731
    tiles = [cv2.resize(to8(src / max(float(np.percentile(src, 99.5)), 1e-3)), size, interpolation=cv2.INTER_AREA)]
    if cut is not None:
        rgb, alpha = cut
        over = rgb * alpha[..., None] + srgb_to_linear(torch.from_numpy(_checker(h, w))).numpy() * (1 - alpha[..., None])
        tiles.append(cv2.resize(to8(over), size, interpolation=cv2.INTER_AREA))
        if truth is not None and truth["alpha"].shape == alpha.shape:
            t, p = truth["alpha"] > 0.5, alpha > 0.5
            err = np.full((h, w, 3), 40, np.uint8)
            err[t & p], err[t & ~p], err[~t & p] = 255, (255, 40, 40), (60, 110, 255)
            tiles.append(cv2.resize(err, size, interpolation=cv2.INTER_NEAREST))
    while len(tiles) < 3:
        tiles.append(np.zeros_like(tiles[0]))
    row = np.concatenate(tiles, 1)
    bar = np.full((22, row.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], 0)


def linear_to_srgb_np(x: np.ndarray) -> np.ndarray:
    return linear_to_srgb(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def write_sheet(path: Path, out: Path, shoots: list[Path], table: pd.DataFrame, sets: tuple[str, ...]) -> None:
    """A contact sheet of every image of ``sets``: source | cut-out over a checker | mask errors."""
    from infra.catalog import Catalog
    from infra.layout import default_state
    from models.simulator.writers import read_truth

    rows = {(r["shoot"], r["source"]): r for r in Catalog.open(default_state(out)).rows()}
    tiles = []
    for _, g in table[table["set"].isin(sets)].iterrows():
        r = rows[(g["shoot"], g["source"])]
        folder = next(f for f in shoots if f.name == g["shoot"])
        cutout = cutout_of(out, r)
        truth_dir = folder / "truth" / Path(g["source"]).stem
        truth = read_truth(truth_dir) if truth_dir.is_dir() else None
        verdict = "" if pd.isna(g.get("right", float("nan"))) else ("right" if g["right"] else "WRONG")
        label = f"{g['shoot']}/{g['source']}  {g['status']}  {verdict}  {g['reasons'] or ''}"[:70]
        tiles.append(sheet_tile(folder / g["source"], cutout, truth, label))
    save_sheet(path, tiles)


def save_sheet(path: Path, tiles: list[np.ndarray]) -> None:
    """The rows ``tiles`` (``sheet_row``) one under another as a PNG at ``path``; nothing when there are none."""
    if tiles:
        width = max(t.shape[1] for t in tiles)
        tiles = [np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, 0), cv2.COLOR_RGB2BGR))


def cutout_of(out: Path, row: dict) -> Path | None:
    """The image's cut-out export: published, or staged while it waits for review (paths relative to OUT)."""
    from infra.layout import Layout

    exports, staged = json.loads(row["exports"] or "{}"), json.loads(row["staged"] or "{}")
    name = exports.get("cutout") or staged.get("cutout")
    return Layout.of(out).abs(name).local_path() if name else None


def failed(row: dict) -> list[str]:
    """The criteria of ``RIGHT`` the row misses (a missing figure misses)."""
    out = []
    for key, (op, bound) in RIGHT.items():
        v = row.get(key, float("nan"))
        if not (bool(v >= bound) if op == ">=" else bool(v <= bound)):
            out.append(key)
    return out


def is_right(row: dict) -> bool:
    return not failed(row)


def grade(out: Path, shoots: list[Path]) -> pd.DataFrame:
    """One row per source file: set, status, reasons and the grades."""
    from infra.catalog import Catalog
    from infra.layout import default_state
    from models.simulator.writers import read_truth

    rows = []
    for r in Catalog.open(default_state(out)).rows():
        folder = next(f for f in shoots if f.name == r["shoot"])
        row = {"set": set_of(r["shoot"]), "shoot": r["shoot"], "source": r["source"], "status": r["status"],
               "reasons": r["reasons"], "path": cutout_path(r["notes"] or "")}
        cutout = cutout_of(out, r) or Path("/nonexistent")
        truth_dir = folder / "truth" / Path(r["source"]).stem
        if truth_dir.is_dir():
            truth = read_truth(truth_dir)
            meta = truth["meta"]
            row.update(family=meta.get("family", meta.get("background")), piece=meta.get("piece"),
                       metal=meta.get("metal"))
            if cutout.exists():
                source = linear_source(folder / r["source"])
                same_grid = source.shape[:2] == truth["alpha"].shape
                row.update(grade_image(cutout, truth, source if same_grid else None))
                if same_grid:
                    row["iou_net"] = network_iou(source, truth["alpha"])
                row["right"] = is_right(row)
        elif cutout.exists():
            mask = real_mask(r["source"])
            if mask is not None:
                _, alpha = read_cutout(cutout)
                if alpha.shape == mask.shape:
                    row["iou_coarse"] = mask_iou(alpha > 0.5, mask)
        rows.append(row)
    return pd.DataFrame(rows)


def cutout_path(notes: str) -> str:
    """Which of the cut-out's ways made the mask, from the image's notes: ``plate`` (the shoot's clean
    plate), ``sweep`` (the smooth backdrop fit), ``network`` (SegNet, where the fit failed); "" when the
    cut-out left no note (it did not run)."""
    for note in notes.splitlines():
        if note.startswith("cutout: ") and "network mask" in note:
            return "network"
        if note.startswith("cutout: ") and "backdrop from" in note:
            return "plate" if "the clean plate" in note else "sweep"
    return ""


def graded_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with a verdict against truth (the real photos have none)."""
    return table[table["right"].notna()] if "right" in table else table.iloc[:0]


def two_numbers(table: pd.DataFrame) -> pd.Series:
    graded = graded_rows(table)
    exported = graded[graded["status"] == "exported"]
    right = graded["right"].astype(bool) if len(graded) else graded.get("right", pd.Series(dtype=bool))
    out = {
        "n": len(table),
        "exported": int((table["status"] == "exported").sum()),
        "review": int((table["status"] == "review").sum()),
        "rejected": int((table["status"] == "rejected").sum()),
        "right": float(right.mean()) if len(graded) else float("nan"),
        "rft": float(((graded["status"] == "exported") & right).mean()) if len(graded) else float("nan"),
        "escapes": float((~exported["right"].astype(bool)).mean()) if len(exported) else float("nan"),
    }
    for key in ("iou", "iou_net", "holes", "thin", "de_chroma", "lost"):
        out[key] = float(graded[key].mean()) if key in graded and len(graded) else float("nan")
    for key in ("pierced", "stray"):     # share of images with piece cut out as a hole, with backdrop cut out apart
        if key in graded and len(graded):
            out[key] = float((graded[key] > 0).mean())
    seen = graded["dust_visible"].sum() if "dust_visible" in graded else 0
    out["dust"] = float(graded["dust_removed"].sum() / seen) if seen > 0 else float("nan")   # every set: same columns
    return pd.Series(out)


def right_but_held(table: pd.DataFrame) -> pd.Series:
    """Rows whose cut-out is right but that QA routed to review (right first time lost to QA)."""
    return table["right"].astype(bool) & (table["status"] != "exported")


def blockers(table: pd.DataFrame) -> pd.DataFrame:
    """Per set, what stands between it and right first time: the images that miss each criterion,
    those that miss it alone (``only_*``: what one fix would make right), and the right images QA
    held for review (``right_held``)."""
    rows = {}
    for name, group in graded_rows(table).groupby("set", sort=False):
        missed = [failed(row) for row in group.to_dict("records")]
        row = {"n": len(group)}
        row.update({key: sum(key in m for m in missed) for key in RIGHT})
        row.update({f"only_{key}": sum(m == [key] for m in missed) for key in RIGHT})
        row["right_held"] = int(right_but_held(group).sum())
        rows[name] = row
    return pd.DataFrame(rows).T


def summarize(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``two_numbers`` for each group of ``keys``."""
    groups = {k if isinstance(k, tuple) else (k,): two_numbers(g) for k, g in table.groupby(keys, sort=False)}
    frame = pd.DataFrame(groups).T
    frame.index = frame.index.set_names(keys)
    return frame


def report(table: pd.DataFrame) -> str:
    pd.set_option("display.width", 200)
    lines = ["## The two numbers, per set (rft = exported and right / all; escapes = exported but wrong / exported)",
             summarize(table, ["set"]).round(3).to_string()]
    graded = graded_rows(table)
    for key in ("family", "piece", "path"):
        if key in graded and len(graded):
            lines += [f"\n## by {key}", summarize(graded, ["set", key])[
                ["n", "exported", "right", "rft", "escapes", "iou", "iou_net", "holes", "de_chroma"]].round(3).to_string()]
    if len(graded):
        lines += ["\n## what stands between each set and right first time (images missing each criterion; "
                  "only_*: missing it alone; right_held: right, held for review)", blockers(graded).to_string()]
        held = graded[right_but_held(graded)]
        if len(held):
            lines += ["\n## right but held", held[["set", "source", "reasons"]].to_string(index=False)]
    escapes = graded[(graded["status"] == "exported") & ~graded["right"].astype(bool)] if len(graded) else graded
    if len(escapes):
        cols = [c for c in ("set", "source", "family", "piece", "iou", "holes", "thin", "de_chroma", "lost", "pierced",
                            "stray") if c in escapes]
        lines += ["\n## escapes (exported but wrong)", escapes[cols].round(3).to_string(index=False)]
    real = table[table["set"] == "real"]
    if len(real):
        cols = [c for c in ("source", "path", "status", "reasons", "iou_coarse") if c in real]
        lines += ["\n## real photos, one by one (look at each: bench/out/trust/)", real[cols].round(3).to_string(index=False)]
    return "\n".join(lines)


def _sheets(args, table: pd.DataFrame, shoots: list[Path]) -> None:
    out = args.work / "out"
    if args.sheet:
        write_sheet(args.sheet, out, shoots, table, ("train", "wide", "plates", "val", "studio", "paper"))
    if args.real_sheet:
        write_sheet(args.real_sheet, out, shoots, table, ("real",))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="*", default=["train", "val", "studio", "paper", "real"],
                    choices=["train", "wide", "plates", "val", "studio", "paper", "real"])
    ap.add_argument("--images", type=int, default=24, help="images per simulated set")
    ap.add_argument("--size", default="1200x800", help="WxH of the simulated sets")
    ap.add_argument("--draw", type=int, default=0, help="other scenes of the same worlds (0: the reported sets; "
                                                        "k shifts every seed by k * DRAW_STEP)")
    ap.add_argument("--preset", default="catalog")
    ap.add_argument("--light", default="toml", choices=LIGHTS,
                    help="how the plates and studio shoots give their light: kelvin and tint in shoot.toml "
                         "(default), a grey card's frame in the shoot (<shoot>_card.<ext>), or none")
    ap.add_argument("--work", type=Path, help="keep shoots and OUT here (default: a temporary folder)")
    ap.add_argument("--csv", type=Path, help="write every image's row here")
    ap.add_argument("--from-csv", type=Path, help="re-print the tables from a CSV written by --csv")
    ap.add_argument("--sheet", type=Path, help="write a contact sheet PNG of the simulated sets (source | cut-out "
                                                "over a checker | mask errors); --real-sheet for the real photos")
    ap.add_argument("--real-sheet", type=Path, help="the same for the real photos (never commit it: no licence)")
    ap.add_argument("--sheet-only", action="store_true", help="with --work and --from-csv: only draw the sheets")
    ap.add_argument("--regrade", action="store_true", help="with --work: grade its finished run again, run nothing")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="stage parameter for every shoot, written to its shoot.toml, e.g. --set cutout.band=3 "
                         "(repeatable; the same form as `loupe review rerun --set` and bench/quality.py)")
    args = ap.parse_args(argv)
    if args.from_csv:
        table = pd.read_csv(args.from_csv, keep_default_na=False, na_values=[""])
        if args.work:
            _sheets(args, table, sorted(p for p in (args.work / "shoots").iterdir() if p.is_dir()))
        if not args.sheet_only:
            print(report(table))
        return 0
    w, h = (int(v) for v in args.size.lower().split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="loupe-trust-"))
    quiet_env()   # what `loupe run` sets: offline, no telemetry (its attempts log errors on a machine without a network)
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))   # its own server database, never a shared one
    from flows.shoot import run_shoots

    if args.regrade:
        shoots = sorted(p for p in (work / "shoots").iterdir() if p.is_dir())
    else:
        shoots = write_sets(work / "shoots", args.sets, args.images, (w, h), args.draw, args.light)
        set_stages(shoots, parse_set(args.set))
        run_shoots(shoots, work / "out", preset=args.preset)
    table = grade(work / "out", shoots)
    if args.csv:
        table.to_csv(args.csv, index=False)
    args.work = work
    _sheets(args, table, shoots)
    print(f"work folder: {work}\n")
    print(report(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
