"""Does the QA gate catch broken retouches? Injected faults on simulator scenes, graded by the real suite.

    python bench/qa.py                          # 5 pieces x 2 sweeps x 3 seeds at 900x600, catalog preset
    python bench/qa.py --csv bench/out/qa.csv   # also keep every row (metrics, fault, reasons)
    python bench/qa.py --calibrate              # propose [[qa]] thresholds from the same runs (TOML)
    python bench/qa.py --from-csv bench/out/qa.csv --calibrate   # re-grade / re-calibrate without re-running

Each scene is rendered by ``models.simulator``, run once through the real
stages (``tasks.pipeline.run_stages``, white background, fill skipped), and
measured by ``qa.metrics.compute_metrics`` as it is (the clean row) and after
each fault of ``qa.faults`` that applies to it (hue of gold only on yellow/rose
gold, of a stone only on coloured stones, a chop only where the piece has a
thin structure). All rows then go through the real Great Expectations suite
(``qa.suite.run_suite``) built from the preset's ``[[qa]]`` rules on what these
scenes measure (not QA's own evidence, ``NOT_MEASURED``). The table:

- ``right``: share of the row kind flagged with the reason its fault must raise
  (``qa.faults.FAULTS``);
- ``flagged``: share flagged for any reason;
- ``n``: rows of that kind.

For the ``clean`` row ``flagged`` is the false-alarm rate; it is split by the scene's own cut-out against
its truth (``cutout_iou`` >= 0.95, the trust bench's bar): a flag on a clean row whose cut-out misses is
QA doing its job, not a false alarm.

``--calibrate`` proposes thresholds: for each metric a bound just outside the
clean distribution (its ``QUANTILE`` quantile pushed out by ``MARGIN`` of the
clean spread, never inside the floor a studio would accept, ``FLOORS``), then
prints how many clean and faulty rows each proposed rule flags, and the TOML
for the preset (``--write FILE`` writes it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import mask_iou  # noqa: E402
from infra.presets import load_preset  # noqa: E402
from models.simulator import PIECES, render_scene  # noqa: E402
from qa import faults  # noqa: E402
from qa.evidence import EVIDENCE_DOCS  # noqa: E402
from qa.metrics import FLOW_METRICS, compute_metrics  # noqa: E402
from qa.suite import Rule, run_suite  # noqa: E402
from tasks.frame import Frame  # noqa: E402
from tasks.pipeline import run_stages, stage_params  # noqa: E402

GOLD = ("yellow_gold", "rose_gold")
COLOURED = ("sapphire", "ruby", "emerald")
THIN_DETAILS = (4, 5)  # prong tips, chain wire

# (column, reason, bound side, floor): the strictest bound a studio wants, whatever the simulator says
# (the colour-difference floors are the catalog preset's earlier, hand-set bounds)
CANDIDATES = [
    ("delta_e_p95", "color_drift", "max", 6.0),
    ("delta_e_mean", "color_drift", "max", 2.5),
    ("hue_shift_metal", "color_drift", "max", 3.0),
    ("hue_shift_stone", "color_drift", "max", 4.0),
    ("background_a", "color_cast", "both", 1.5),
    ("background_b", "color_cast", "both", 1.5),
    ("detail_retention", "detail_loss", "min", 0.85),
    ("edge_recall", "detail_loss", "min", 0.90),
    ("thin_gap", "mask_suspect", "max", 18.0),
    ("edge_halo", "mask_suspect", "max", 0.8),
    ("edge_halo_dark", "mask_suspect", "max", 0.8),
]
RIGHT_IOU = 0.95   # the trust bench's mask IoU a right cut-out reaches (bench/trust.py RIGHT)
QUANTILE = 0.99
MARGIN = 0.25
# columns the preset's rules may read that these scenes do not make: QA's own evidence (qa.evidence, read from
# the source; bench/trust.py grades it on every set) and what the flow sets (the exports' enlargement, the
# shoot's sensor-dust survey)
NOT_MEASURED = set(EVIDENCE_DOCS) | set(FLOW_METRICS)


def run_scene(piece: str, background: str, seed: int, size: tuple[int, int]) -> list[dict]:
    """Clean and faulty metric rows of one scene."""
    rng = np.random.default_rng([seed, PIECES.index(piece), len(background)])
    scene = render_scene(rng, size, piece=piece, background=background)
    frame = Frame(torch.from_numpy(scene.source.transpose(2, 0, 1).copy())[None])
    with torch.inference_mode():
        result, reference, _ = run_stages(frame, stage_params({}, {"mode": "white"}), ("fill",))
        meta = {"piece": piece, "background": background, "seed": seed, "metal": scene.meta["metal"],
                "stone": scene.meta["stone"] or "",
                # the scene's own cut-out against its truth: a "clean" row (no fault injected) whose cut-out
                # misses is no false alarm when flagged
                "cutout_iou": mask_iou(result.alpha[0, 0].numpy() > 0.5, scene.alpha > 0.5)}
        name = f"{piece}-{background}-{seed}"
        rows = [{"image_id": f"{name}|clean", "fault": "clean", **meta, **compute_metrics(reference, result)}]
        fault_rng = np.random.default_rng([seed, 7, PIECES.index(piece)])
        for fault in faults.FAULTS:
            if fault == "hue_metal" and scene.meta["metal"] not in GOLD:
                continue
            if fault == "hue_stone" and scene.meta["stone"] not in COLOURED:
                continue
            where = np.isin(scene.details, THIN_DETAILS) if fault == "chop" else None
            pair = faults.inject(fault, reference, result, fault_rng, where=where)
            if pair is None and fault == "chop":  # no truth wire in the matte's thin part: any thin part
                pair = faults.inject(fault, reference, result, fault_rng)
            if pair is None:
                continue
            rows.append({"image_id": f"{name}|{fault}", "fault": fault, **meta, **compute_metrics(*pair)})
    return rows


def grade(table: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """Run the real GX suite on every row; add ``reasons``, ``flagged`` and ``right``."""
    outcome = run_suite(table, rules, suite_name="loupe_bench_qa")
    table = table.copy()
    table["reasons"] = [";".join(outcome.reasons[i]) for i in table["image_id"]]
    table["flagged"] = table["reasons"] != ""
    expected = table["fault"].map(faults.FAULTS)
    table["right"] = [bool(e) and e in r.split(";") for e, r in zip(expected, table["reasons"])]
    return table


def confusion(table: pd.DataFrame) -> pd.DataFrame:
    kinds = ["clean", *faults.FAULTS]
    rows = []
    for kind in kinds:
        part = table[table["fault"] == kind]
        if part.empty:
            continue
        rows.append({"rows": kind, "n": len(part),
                     "right %": np.nan if kind == "clean" else 100 * part["right"].mean(),
                     "flagged %": 100 * part["flagged"].mean()})
    clean = table[table["fault"] == "clean"]
    if "cutout_iou" in table and not clean.empty:    # (rows written before the column: no split)
        right = clean["cutout_iou"] >= RIGHT_IOU
        rows[1:1] = [{"rows": label, "n": len(part), "right %": np.nan,
                      "flagged %": 100 * part["flagged"].mean() if len(part) else np.nan}
                     for label, part in (("clean, cut-out right", clean[right]), ("clean, cut-out wrong", clean[~right]))]
    out = pd.DataFrame(rows).set_index("rows")
    faulty = table[table["fault"] != "clean"]
    out.loc["all faults"] = [len(faulty), 100 * faulty["right"].mean(), 100 * faulty["flagged"].mean()]
    return out


def calibrate(table: pd.DataFrame) -> tuple[list[Rule], pd.DataFrame]:
    """Thresholds from the clean distribution (quantile + margin, floored); per-rule separation."""
    clean = table[table["fault"] == "clean"]
    rules, report = [], []
    for column, reason, side, floor in CANDIDATES:
        values = clean[column].astype(float).dropna()
        if values.empty:
            continue
        spread = float(values.quantile(0.75) - values.quantile(0.25)) + 1e-9
        if side in ("max", "both"):
            source = values.abs() if side == "both" else values
            hi = max(float(source.quantile(QUANTILE)) + MARGIN * max(spread, float(source.std())), floor)
        if side == "min":
            lo = min(float(values.quantile(1 - QUANTILE)) - MARGIN * max(spread, float(values.std())), floor)
            rule = Rule(column, reason, min=round(lo, 3))
        elif side == "max":
            rule = Rule(column, reason, max=round(hi, 2))
        else:
            rule = Rule(column, reason, min=-round(hi, 2), max=round(hi, 2))
        rules.append(rule)
        col = table[column].astype(float)
        hit = ((col < rule.min) if rule.min is not None else False) | ((col > rule.max) if rule.max is not None else False)
        target = table["fault"].map(faults.FAULTS) == reason
        report.append({"column": column, "reason": reason, "min": rule.min, "max": rule.max,
                       "clean flagged %": 100 * hit[table["fault"] == "clean"].mean(),
                       "target faults flagged %": 100 * hit[target].mean() if target.any() else np.nan})
    return rules, pd.DataFrame(report)


def to_toml(rules: list[Rule]) -> str:
    lines = ["# calibrated by: python bench/qa.py --calibrate"]
    for r in rules:
        lines += ["[[qa]]", f'column = "{r.column}"', f'reason = "{r.reason}"']
        if r.min is not None:
            lines.append(f"min = {r.min}")
        if r.max is not None:
            lines.append(f"max = {r.max}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="scenes per piece x backdrop")
    ap.add_argument("--size", type=int, nargs=2, default=(900, 600), metavar=("W", "H"))
    ap.add_argument("--pieces", nargs="*", default=list(PIECES), choices=PIECES)
    ap.add_argument("--backgrounds", nargs="*", default=["white_sweep", "grey_sweep"],
                    help="coloured paper and desks are routed to review by neutralize's cast_uncertain by design")
    ap.add_argument("--preset", default="catalog", help="preset whose [[qa]] rules are graded")
    ap.add_argument("--csv", type=Path, help="write every row here")
    ap.add_argument("--from-csv", type=Path, help="grade rows written by --csv instead of running scenes")
    ap.add_argument("--calibrate", action="store_true", help="propose [[qa]] thresholds and grade with them")
    ap.add_argument("--write", type=Path, help="with --calibrate: write the proposed rules as TOML here")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if args.from_csv:
        table = pd.read_csv(args.from_csv, keep_default_na=True)
    else:
        t0, rows = time.perf_counter(), []
        for background in args.backgrounds:
            for piece in args.pieces:
                for seed in range(args.seeds):
                    rows += run_scene(piece, background, seed, tuple(args.size))
        table = pd.DataFrame(rows)
        print(f"{table['fault'].eq('clean').sum()} scenes at {args.size[0]}x{args.size[1]}, "
              f"{len(table)} rows, {time.perf_counter() - t0:.0f} s")
        if args.csv:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)

    pd.set_option("display.width", 160)
    if args.calibrate:
        rules, report = calibrate(table)
        print("\nproposed rules (per rule: share of clean rows and of the faults it targets that it flags)")
        print(report.round(3).to_string(index=False))
        text = to_toml(rules)
        print("\n" + text)
        if args.write:
            args.write.write_text(text)
        # stage flags stay (a stage that could not handle an image always goes to review), and so do the bounds
        # no clean distribution sets: the mask's and the outline's (fine_outline: what QA can vouch for)
        preset = load_preset(args.preset)
        rules += [Rule(**r.model_dump()) for r in preset.qa
                  if r.column.startswith(("flag_", "mask_", "clipped", "outline_"))]
        label = "calibrated rules"
    else:
        rules = [Rule(**r.model_dump()) for r in load_preset(args.preset).qa if r.column not in NOT_MEASURED]
        label = f"preset {args.preset!r}, its rules on the retouch's metrics"
    graded = grade(table, rules)
    print(f"confusion ({label}):")
    print(confusion(graded).round(1).to_string())
    missed = graded[(graded["fault"] != "clean") & ~graded["right"]]
    false = graded[(graded["fault"] == "clean") & graded["flagged"]]
    for title, part in (("faults missed", missed), ("clean flagged", false)):
        if not part.empty:
            print(f"\n{title}:")
            print(part[["image_id", "reasons"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
