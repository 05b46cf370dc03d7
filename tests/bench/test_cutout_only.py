"""bench/cutout_only.py: the cut-out alone on the trust bench's sets, graded as the bench grades."""

import cv2
import pandas as pd

from bench.cutout_only import cut_shoot, main, report
from bench.trust import write_sets


def test_each_shoot_is_cut_out_its_own_way_with_the_bench_grades_and_overrides_on_top(tmp_path):
    """A plates shoot is cut out against its plate, a simulator shoot against the sweep fit; --set
    stages go over the shoot's, as `loupe run` takes them; the grades are the mask's (a clean
    simulator ring on a sweep is found)."""
    train, plates = write_sets(tmp_path / "shoots", ["train", "plates"], 1, (480, 320))
    (row,) = cut_shoot(train, "catalog", {})
    assert row["set"] == "train" and row["path"] in ("sweep", "network")
    assert set(row) >= {"iou", "holes", "thin", "pierced", "stray"} and 0.8 < row["iou"] <= 1
    (plated,) = cut_shoot(plates, "catalog", {})
    assert plated["set"] == "plates" and plated["path"] == "plate"
    (forced,) = cut_shoot(train, "catalog", {"cutout": {"method": "network"}})
    assert forced["path"] == "network"


def test_the_report_counts_the_images_passing_each_criterion(tmp_path, capsys):
    table = pd.DataFrame([
        {"set": "train", "family": "white_sweep", "piece": "ring", "path": "sweep",
         "iou": 0.97, "holes": 1.0, "thin": 1.0, "pierced": 0, "stray": 0},
        {"set": "train", "family": "white_sweep", "piece": "chain", "path": "sweep",
         "iou": 0.60, "holes": 0.5, "thin": 0.95, "pierced": 2, "stray": 0},
    ])
    text = report(table)
    line = next(row for row in text.splitlines() if row.startswith("train"))
    assert line.split()[1:] == ["2", "0.785", "0.75", "0.975", "1", "1", "2", "1"]
    assert "## per piece" in text and "## per path" in text
    main(["--sets", "train", "--images", "1", "--size", "480x320", "--work", str(tmp_path), "--csv",
          str(tmp_path / "rows.csv"), "--sheet", str(tmp_path / "sheet.png")])
    (row,) = pd.read_csv(tmp_path / "rows.csv").to_dict("records")
    assert "work folder" in capsys.readouterr().out
    # one row of the sheet: a label bar over source | cut-out over a checker | mask errors, 360 px each
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (22 + 240 + 4, 3 * 360, 3)
    errors = sheet[22:262, 720:]
    right = (errors == 255).all(-1).sum()     # white: piece in the mask and the truth
    wrong = (errors != 40).any(-1).sum() - right
    assert right > 0 and abs(right / (right + wrong) - row["iou"]) < 0.1, (right, wrong, row["iou"])
