"""bench/qa.py: injected faults graded by the catalog preset's rules through the real suite."""

import pandas as pd

from bench.qa import main


def test_the_preset_grades_the_faults_on_the_rules_the_bench_measures(tmp_path, capsys):
    """The preset also holds rules on QA's own evidence (read from the source by qa.evidence, not by
    compute_metrics): the bench grades the rules on the retouch's metrics and runs, where it once
    stopped on the first column it had not measured."""
    rows = tmp_path / "qa.csv"
    assert main(["--pieces", "band", "--backgrounds", "white_sweep", "--seeds", "1", "--size", "360", "240",
                 "--csv", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "its rules on the retouch's metrics" in out and "all faults" in out
    table = pd.read_csv(rows)
    assert set(table["fault"]) >= {"clean", "oversmooth", "cast", "halo"}
    # a clean row's flag is a false alarm only where its own cut-out is right against the scene's truth
    assert table["cutout_iou"].between(0, 1).all()
    assert "clean, cut-out right" in out and "clean, cut-out wrong" in out
    # a cast neutralize left in is caught as one, whatever else the small scene shows
    assert main(["--from-csv", str(rows)]) == 0
    confusion = capsys.readouterr().out
    cast = next(line for line in confusion.splitlines() if line.startswith("cast "))
    assert cast.split()[2] == "100.0", cast
