"""Tests for the Great Expectations QA gate (qa/suite.py).

Each run_suite call builds a fresh ephemeral GX context (~0.2 s once GX is
imported; the first call pays the 3-7 s import), so results that several tests
inspect are computed once in module-scoped fixtures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from qa.suite import Rule, SuiteOutcome, run_suite

RULES = [
    Rule("delta_e_p95", "color_drift", max=2.0),
    Rule("detail_retention", "detail_loss", min=0.9),
    Rule("edge_recall", "detail_loss", min=0.8),
    Rule("exposure_ev", "exposure", min=-0.3, max=0.3),
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["clean", "drift", "soft", "edges", "both_detail", "dark", "bright",
                         "edge_of_range", "multi", "nan_delta"],
            "delta_e_p95":      [1.0, 2.5, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 9.0, np.nan],
            "detail_retention": [0.95, 0.95, 0.5, 0.95, 0.1, 0.95, 0.95, 0.9, 0.2, 0.95],
            "edge_recall":      [0.9, 0.9, 0.9, 0.7, 0.1, 0.9, 0.9, 0.8, 0.9, 0.9],
            "exposure_ev":      [0.0, 0.0, 0.0, 0.0, 0.0, -0.31, 0.5, 0.3, -1.0, 0.0],
            "unrelated":        ["x"] * 10,  # non-metric columns are ignored
        }
    )


EXPECTED = {
    "clean": [],
    "drift": ["color_drift"],
    "soft": ["detail_loss"],
    "edges": ["detail_loss"],
    "both_detail": ["detail_loss"],  # two rules, one shared reason, reported once
    "dark": ["exposure"],
    "bright": ["exposure"],
    "edge_of_range": [],  # bounds are inclusive
    "multi": ["color_drift", "detail_loss", "exposure"],
    "nan_delta": ["color_drift"],
}


@pytest.fixture(scope="module")
def outcome() -> SuiteOutcome:
    return run_suite(_frame(), RULES, suite_name="loupe_known_answers")


@pytest.fixture(scope="module")
def docs_outcome(tmp_path_factory) -> SuiteOutcome:
    docs = tmp_path_factory.mktemp("docs") / "site"
    return run_suite(_frame(), RULES, suite_name="loupe_docs_suite", docs_dir=docs)


def test_import_is_cheap_and_disables_analytics():
    code = (
        "import os, sys, qa.suite;"
        "assert 'great_expectations' not in sys.modules;"
        "assert os.environ['GX_ANALYTICS_ENABLED'] == 'false'"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "GX_ANALYTICS_ENABLED"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_known_answers(outcome):
    assert outcome.success is False
    assert outcome.reasons == EXPECTED
    assert outcome.failed == {k: v for k, v in EXPECTED.items() if v}
    assert outcome.docs_index is None


def test_results_are_real_gx_and_json_serialisable(outcome):
    res = outcome.results
    json.dumps(res, allow_nan=False)
    assert res["success"] is False
    assert res["suite_name"] == "loupe_known_answers"
    types = [r["expectation_config"]["type"] for r in res["results"]]
    # 4 distinct bounds + one not-null per column
    assert types.count("expect_column_values_to_be_between") == 4
    assert types.count("expect_column_values_to_not_be_null") == 4
    for r in res["results"]:
        assert r["result"]["unexpected_index_column_names"] == ["image_id"]
        if r["expectation_config"]["type"] == "expect_column_values_to_be_between":
            # mostly=1.0 is GX's default and is omitted from the serialised kwargs
            assert r["expectation_config"]["kwargs"].get("mostly", 1.0) == 1.0


def test_gx_between_ignores_nan_so_not_null_catches_it(outcome):
    by_kind = {}
    for r in outcome.results["results"]:
        cfg = r["expectation_config"]
        if cfg["kwargs"]["column"] == "delta_e_p95":
            by_kind[cfg["type"]] = r["result"]
    between = by_kind["expect_column_values_to_be_between"]
    ids = {row["image_id"] for row in between["unexpected_index_list"]}
    assert ids == {"drift", "multi"}  # NaN row is *not* unexpected for GX ...
    assert between["missing_count"] == 1  # ... only "missing"
    not_null = by_kind["expect_column_values_to_not_be_null"]
    assert [row["image_id"] for row in not_null["unexpected_index_list"]] == ["nan_delta"]


def test_nan_none_and_garbage_count_as_failures():
    df = pd.DataFrame(
        {
            "image_id": ["ok", "nan", "none", "garbage", "inf"],
            "sharpness": pd.Series([0.5, np.nan, None, "n/a", np.inf], dtype=object),
        }
    )
    out = run_suite(df, [Rule("sharpness", "blur", min=0.1, max=1.0)], suite_name="nan")
    assert out.reasons == {"ok": [], "nan": ["blur"], "none": ["blur"],
                           "garbage": ["blur"], "inf": ["blur"]}
    assert out.success is False


def test_all_nan_column_and_nan_with_both_reasons():
    df = pd.DataFrame({"image_id": ["a", "b"], "m": [np.nan, np.nan], "n": [1.0, np.nan]})
    rules = [Rule("m", "unmeasured", max=1.0), Rule("n", "r1", min=0.0), Rule("n", "r2", max=5.0)]
    out = run_suite(df, rules, suite_name="all_nan")
    assert out.reasons == {"a": ["unmeasured"], "b": ["r1", "r2", "unmeasured"]}


def test_shared_reason_codes_and_identical_bounds():
    # GX's suite drops expectations that differ only in meta; two rules with the
    # same column and bounds but different reasons must both still report.
    df = pd.DataFrame({"image_id": ["a", "b", "c"], "q": [0.5, 0.95, 0.7], "r": [1.0, 0.1, 1.0]})
    rules = [
        Rule("q", "detail_loss", min=0.9),
        Rule("q", "needs_review", min=0.9),
        Rule("r", "detail_loss", min=0.5),
        Rule("q", "detail_loss", min=0.6),  # looser duplicate reason on same column
    ]
    out = run_suite(df, rules, suite_name="shared")
    assert out.reasons == {
        "a": ["detail_loss", "needs_review"],
        "b": ["detail_loss"],
        "c": ["detail_loss", "needs_review"],
    }


def test_all_clean_succeeds_and_int_ids_are_strings():
    df = pd.DataFrame({"image_id": [101, 102], "delta_e_p95": [0, 1]})
    out = run_suite(df, [Rule("delta_e_p95", "color_drift", max=2.0)], suite_name="clean")
    assert out.success is True
    assert out.reasons == {"101": [], "102": []}
    assert out.results["success"] is True


@pytest.mark.parametrize(
    "df",
    [pd.DataFrame(), _frame().iloc[0:0]],
    ids=["no_columns", "no_rows"],
)
def test_empty_frame(df):
    out = run_suite(df, RULES, suite_name="empty")
    assert out.success is True
    assert out.reasons == {}
    json.dumps(out.results, allow_nan=False)


def test_missing_column_error():
    df = _frame().drop(columns=["edge_recall"])
    with pytest.raises(ValueError, match="edge_recall"):
        run_suite(df, RULES, suite_name="missing")


@pytest.mark.parametrize(
    "df, rules, match",
    [
        (pd.DataFrame({"x": [1.0]}), [Rule("x", "r", max=1)], "image_id"),
        (pd.DataFrame({"image_id": ["a", "a"], "x": [1.0, 2.0]}), [Rule("x", "r", max=1)], "duplicate"),
        (pd.DataFrame({"image_id": ["a"], "x": [1.0]}), [Rule("x", "r")], "neither min nor max"),
        (pd.DataFrame({"image_id": ["a"], "x": [1.0]}), [Rule("x", "r", min=2, max=1)], "min 2 > max 1"),
    ],
    ids=["no_image_id", "duplicate_ids", "no_bounds", "inverted_bounds"],
)
def test_bad_input_errors(df, rules, match):
    with pytest.raises(ValueError, match=match):
        run_suite(df, rules, suite_name="bad")


def test_data_docs_written(docs_outcome):
    assert docs_outcome.reasons == EXPECTED
    index = docs_outcome.docs_index
    assert index is not None and index.name == "index.html" and index.is_file()
    site = index.parent
    assert "loupe_docs_suite" in index.read_text()
    suite_page = site / "expectations" / "loupe_docs_suite.html"
    assert suite_page.is_file()
    assert "delta_e_p95" in suite_page.read_text()
    validation_pages = list((site / "validations" / "loupe_docs_suite").rglob("*.html"))
    assert len(validation_pages) == 1
    assert "loupe_docs_suite" in validation_pages[0].read_text()
    assert (site / "static").is_dir()


def test_repeated_calls_are_independent(outcome):
    again = run_suite(_frame(), RULES, suite_name="loupe_known_answers")
    assert again.reasons == outcome.reasons
    other = run_suite(_frame(), RULES[:1], suite_name="loupe_known_answers")
    assert other.failed == {"drift": ["color_drift"], "multi": ["color_drift"],
                            "nan_delta": ["color_drift"]}


def test_results_have_no_nan():
    df = pd.DataFrame({"image_id": ["a"], "x": [np.nan]})
    out = run_suite(df, [Rule("x", "r", max=1.0)], suite_name="nanjson")

    def walk(o):
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, float):
            assert math.isfinite(o)

    walk(out.results)


def test_no_rules_passes_every_image():
    out = run_suite(pd.DataFrame({"image_id": ["a", "b"]}), [], suite_name="no_rules")
    assert out.success is True
    assert out.reasons == {"a": [], "b": []}
