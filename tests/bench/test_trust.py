"""bench/trust.py's tables: what stands between a set and right first time."""

import pandas as pd

from bench.trust import RIGHT, blockers, failed, is_right

GOOD = {"iou": 0.98, "holes": 1.0, "thin": 1.0, "de_chroma": 1.0, "lost": 0.0, "pierced": 0}


def test_failed_names_every_missed_criterion_and_a_missing_figure_misses():
    assert failed(GOOD) == [] and is_right(GOOD)
    assert failed({**GOOD, "iou": 0.9, "pierced": 3}) == ["iou", "pierced"]
    assert failed({**GOOD, "de_chroma": float("nan")}) == ["de_chroma"]      # a lost piece has no colour to grade
    assert set(failed({})) == set(RIGHT)


def test_blockers_count_each_criterion_alone_and_the_right_images_qa_held():
    rows = [
        {"set": "train", **GOOD, "right": True, "status": "exported"},
        {"set": "train", **GOOD, "right": True, "status": "review"},                  # right, held
        {"set": "train", **GOOD, "pierced": 2, "right": False, "status": "review"},    # one fix away
        {"set": "train", **GOOD, "pierced": 2, "iou": 0.7, "right": False, "status": "review"},
        {"set": "val", **GOOD, "holes": 0.5, "right": False, "status": "review"},
        {"set": "real", "right": None, "status": "review"},                            # not graded
    ]
    table = blockers(pd.DataFrame(rows))
    assert list(table.index) == ["train", "val"]
    train, val = table.loc["train"], table.loc["val"]
    assert (train["n"], train["pierced"], train["only_pierced"], train["iou"], train["only_iou"]) == (4, 2, 1, 1, 0)
    assert train["right_held"] == 1 and val["right_held"] == 0
    assert (val["holes"], val["only_holes"]) == (1, 1)
