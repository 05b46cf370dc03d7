"""Sensor-dust survey on simulated shoots: recall, false spots, residual error, seconds per image.

    python bench/sensor_dust.py [--images 12] [--spots 6] [--size 1536x1024] [--seeds 1 2 3] [--survey-frames N]

For each seed a shoot is written to a temporary folder (DNG/JPEG/TIFF cycled) with
``--spots`` sensor-dust spots, its files are surveyed as the flow does (an even sample of at most
``survey_frames``, a reduced decode + evidence map each, timed, one thread), and the spots found
are compared with the truth. The same
shoot without sensor dust counts false spots. Residual error: mean |corrected - undusted| /
undusted luminance over the pixels a true spot darkens by 1 % or more, on the simulator's
linear sources (identical noise draws with and without dust).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.retouch import sensor_dust_evidence  # noqa: E402
from models.simulator import render_image, sensor_dust_gain, shoot_sensor_dust, synth_shoot  # noqa: E402
from tasks.frame import luminance  # noqa: E402
from tasks.sensor_dust import BackdropTexture, SensorDustParams, find_sensor_dust, remove_sensor_dust, survey_sample  # noqa: E402


def _tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def survey(folder: Path, params: SensorDustParams):
    paths = survey_sample(sorted(p for p in folder.iterdir() if p.is_file()), params.survey_frames)
    t0 = time.perf_counter()
    maps = [sensor_dust_evidence(p, params) for p in paths]
    t1 = time.perf_counter()
    try:
        spots = find_sensor_dust(maps, params)
    except BackdropTexture as exc:     # as the flow: none corrected, and said
        print(f"  {folder.name}: {exc}")
        spots = []
    return spots, (t1 - t0) / len(paths), time.perf_counter() - t1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--spots", type=int, default=6)
    ap.add_argument("--size", default="1536x1024")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--survey-frames", type=int, default=SensorDustParams().survey_frames,
                    help="frames the survey reads of a larger shoot (the preset's default unless given)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)   # as in a Ray worker with one CPU
    w, h = (int(v) for v in a.size.split("x"))
    params = SensorDustParams(survey_frames=a.survey_frames)
    print("seed  found/true  false(dusty)  false(clean)  err_before  err_after  evidence_s/img  combine_s")
    totals = np.zeros(4)
    for seed in a.seeds:
        truth = shoot_sensor_dust(seed, a.spots)
        with tempfile.TemporaryDirectory() as tmp:
            dusty_dir, clean_dir = Path(tmp) / "dusty", Path(tmp) / "clean"
            synth_shoot(dusty_dir, a.images, seed, size=(w, h), sensor_dust=a.spots)
            synth_shoot(clean_dir, a.images, seed, size=(w, h))
            for d in (dusty_dir, clean_dir):
                import shutil
                shutil.rmtree(d / "truth")
            spots, ev_s, comb_s = survey(dusty_dir, params)
            clean_spots, _, _ = survey(clean_dir, params)

        def hit(s, t):
            return math.hypot((s.x - t["x"]) * w, (s.y - t["y"]) * h) <= max(t["r"] * max(w, h), 3)

        found = [t for t in truth if any(hit(s, t) for s in spots)]
        false = [s for s in spots if not any(hit(s, t) for t in truth)]
        region = torch.from_numpy(sensor_dust_gain(truth, w, h) < 0.99)
        before, after = [], []
        for k in range(a.images):
            yd = luminance(_tensor(render_image(seed, k, (w, h), sensor_dust=a.spots).source))
            yc = luminance(_tensor(render_image(seed, k, (w, h)).source))[0, 0]
            yr = luminance(remove_sensor_dust(_tensor(render_image(seed, k, (w, h), sensor_dust=a.spots).source), spots))
            m = region & (yc > 0.02)
            before.append(float(((yd[0, 0] - yc).abs() / yc)[m].mean()))
            after.append(float(((yr[0, 0] - yc).abs() / yc)[m].mean()))
        print(f"{seed:4d}  {len(found):5d}/{len(truth):<4d}  {len(false):12d}  {len(clean_spots):12d}  "
              f"{np.mean(before):10.4f}  {np.mean(after):9.4f}  {ev_s:14.3f}  {comb_s:9.3f}")
        totals += [len(found), len(truth), len(false), len(clean_spots)]
    print(f"recall {totals[0] / max(totals[1], 1):.2f} ({int(totals[0])}/{int(totals[1])}), "
          f"false spots {int(totals[2])} with dust, {int(totals[3])} without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
