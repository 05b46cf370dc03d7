"""The cut-out alone on the trust bench's training sets: a tuning loop in seconds, not minutes.

Each image is developed, neutralized and cut out as ``loupe run`` does it (its shoot's clean plate and
light, the preset's and the shoot's stage parameters, ``--set`` over them), without the sensor-dust
survey, the later stages or QA, and its mask is graded with ``bench/trust.py``'s criteria (IoU, holes,
thin parts, pierced, stray). Only the training sets (``train``, ``wide``, ``plates``): the validation
family (``val``, ``studio``) is graded through ``loupe run`` alone (``bench/trust.py``), so that no
quick loop tunes on it.

    .venv/bin/python bench/cutout_only.py --sets train wide plates [--images 24] [--work DIR] \\
        [--set cutout.KEY=VALUE] [--csv F] [--sheet F.png]

About 1 s an image at 1200 x 800 on one CPU thread, against ``bench/trust.py``'s ~10 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.trust import cutout_path, developed, mask_grades, save_sheet, set_of, sheet_row, write_sets  # noqa: E402
from flows.retouch import SHOOT_LEVEL, TO_CUTOUT  # noqa: E402
from flows.review import parse_set  # noqa: E402
from flows.shoot import merge_stages, plan_shoot  # noqa: E402
from infra.shoots import list_shoot  # noqa: E402
from tasks.frame import Frame  # noqa: E402
from tasks.pipeline import STAGE_NAMES, run_stages, stage_params  # noqa: E402

TRAINING = ("train", "wide", "plates")
SKIPPED = tuple(n for n in STAGE_NAMES if n not in TO_CUTOUT)     # the stages after the cut-out


def cut_shoot(folder: Path, preset: str, overrides: dict[str, dict], tiles: list | None = None) -> list[dict]:
    """One row per source of the shoot ``folder`` that has a truth: the set, image, family, piece, the
    cut-out's way (``bench.trust.cutout_path``) and the mask's grades. ``tiles``: each image's contact
    sheet row (``bench.trust.sheet_row``: source | cut-out over a checker | mask errors) is added to it."""
    from models.simulator.writers import read_truth

    plan = plan_shoot(list_shoot(folder), preset)
    shoot = plan.shoot
    stages = merge_stages(plan.preset.stages, overrides)    # as the flow takes them (its card's light), --set on top
    params = stage_params({k: v for k, v in stages.items() if k not in SHOOT_LEVEL})
    plate = developed(shoot.plate.local_path()) if shoot.plate is not None else None
    rows = []
    for src in shoot.sources:
        path = src.path.local_path()
        truth_dir = folder / "truth" / path.stem
        if src.refused or not truth_dir.is_dir():
            continue
        with torch.inference_mode():
            image = developed(path)
            frame = Frame(image, plate=plate if plate is not None and plate.shape == image.shape else None)
            cut, _, _ = run_stages(frame, params, SKIPPED, want_reference=False)
        truth = read_truth(truth_dir)
        meta = truth["meta"]
        rows.append({"set": set_of(folder.name), "shoot": folder.name, "source": path.name,
                     "family": meta.get("family", meta.get("background")), "piece": meta.get("piece"),
                     "path": cutout_path("\n".join(cut.notes)),
                     **mask_grades(cut.alpha[0, 0].numpy() > 0.5, truth["alpha"] > 0.5)})
        if tiles is not None:
            r = rows[-1]
            hwc = lambda t: t[0].permute(1, 2, 0).numpy()  # noqa: E731
            tiles.append(sheet_row(hwc(image), (hwc(cut.image), cut.alpha[0, 0].numpy()), truth,
                                   f"{folder.name}/{path.name}  {r['path']}  IoU {r['iou']:.3f}  holes {r['holes']:.2f}"))
    return rows


def report(table: pd.DataFrame) -> str:
    """Means per set and per set and family, and how many images pass each mask criterion."""
    figures = ["iou", "holes", "thin"]
    passing = table.assign(iou_ok=table["iou"] >= 0.95, holes_ok=table["holes"] >= 0.9,
                           thin_ok=table["thin"] >= 0.9, pierced_ok=table["pierced"] == 0,
                           stray_ok=table["stray"] == 0)
    passing["all_ok"] = passing[["iou_ok", "holes_ok", "thin_ok", "pierced_ok", "stray_ok"]].all(axis=1)
    per_set = passing.groupby("set").agg(n=("iou", "size"), **{k: (k, "mean") for k in figures},
                                         **{k: (k, "sum") for k in ("iou_ok", "holes_ok", "thin_ok", "all_ok")})
    per = {key: table.groupby(["set", key])[figures].mean() for key in ("family", "piece", "path")}
    return ("## the cut-out alone, per set (means; *_ok: images passing the criterion; all_ok: the mask's five)\n"
            f"{per_set.round(3).to_string()}\n"
            + "".join(f"\n## per {key}\n{means.round(3).to_string()}\n" for key, means in per.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="*", default=list(TRAINING), choices=TRAINING)
    ap.add_argument("--images", type=int, default=24, help="images per set")
    ap.add_argument("--size", default="1200x800", help="WxH")
    ap.add_argument("--preset", default="catalog")
    ap.add_argument("--work", type=Path, help="the shoots are written here, or read from here when there")
    ap.add_argument("--csv", type=Path, help="write every image's row here")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="stage parameter for every shoot, over its shoot.toml (repeatable; bench/trust.py's form)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as in a Ray worker)")
    ap.add_argument("--sheet", type=Path, help="write a contact sheet PNG: source | cut-out over a checker | "
                                               "mask errors (white right, red piece missed, blue backdrop kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="loupe-cutout-"))
    shoots = work / "shoots"
    if shoots.is_dir():
        folders = sorted(p for p in shoots.iterdir() if p.is_dir() and set_of(p.name) in args.sets)
    else:
        w, h = (int(v) for v in args.size.lower().split("x"))
        folders = write_sets(shoots, args.sets, args.images, (w, h))
    overrides = parse_set(args.set)
    tiles = [] if args.sheet else None
    table = pd.DataFrame([row for folder in folders for row in cut_shoot(folder, args.preset, overrides, tiles)])
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.sheet:
        save_sheet(args.sheet, tiles)
    print(f"work folder: {work}\n")
    print(report(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
