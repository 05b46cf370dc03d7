"""Great Expectations QA gate for per-image retouch metrics.

Per-image QA metrics arrive as a pandas DataFrame (one row per image, an
``image_id`` column plus numeric metric columns).  Thresholds arrive as plain
:class:`Rule` objects so this module does not depend on the preset models in
``infra/presets.py``; the caller converts its preset into rules.

``run_suite`` builds a fresh *ephemeral* GX 1.x context per call, validates
the frame with one ``ExpectColumnValuesToBeBetween`` per distinct bound plus one
``ExpectColumnValuesToNotBeNull`` per metric column, and maps the failing rows
(via ``unexpected_index_list`` keyed on ``image_id``) back to stable reason codes.

GX quirks this module works around (see the tests for each):

* ``expect_column_values_to_be_between`` ignores nulls/NaN (they are counted as
  ``missing_count`` and are *not* unexpected).  A metric that could not be
  computed is suspicious, so every rule column also gets a not-null expectation
  mapped to the same reason code(s).
* An ``ExpectationSuite`` is set-like: adding an expectation that equals an
  existing one except for ``meta``/``notes`` is silently dropped.  Rules are
  therefore grouped per (column, min, max) before they become expectations, and
  each expectation carries *all* of its reason codes in ``meta``.
* A missing column (or a type error inside a metric) does not raise: GX records
  it in ``exception_info`` and marks the expectation failed with an empty
  result.  Columns are checked up front (``ValueError``), metric columns are
  coerced to float (unparseable values -> NaN -> failure), and any remaining
  GX-side exception is re-raised as ``RuntimeError`` instead of being lost.
* The ephemeral context ships a default ``local_site`` data-docs site pointing
  at a throw-away temp dir; docs are built only for our own site.
* Data Docs in ephemeral mode: the site index builder deletes every page in
  ``docs_dir`` whose suite/validation is not in the (in-memory, per-call)
  stores, so ``docs_dir`` only ever shows the *latest* call.  It is GX-owned:
  use a dedicated directory per run (foreign files under ``validations/`` can
  even make GX's index builder crash).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

# Disable GX usage analytics.  GX reads this environment variable when it is
# imported / when a context is created, so it must be set before the (lazy)
# ``import great_expectations`` below.  Setting it here, at import time of
# ``qa.suite``, is a deliberate process-wide side effect; an explicit value set
# by the operator is respected.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Rule", "SuiteOutcome", "run_suite", "IMAGE_ID"]

IMAGE_ID = "image_id"
_DOCS_SITE = "loupe_qa_site"
_META_KEY = "loupe_reasons"


@dataclass(frozen=True)
class Rule:
    """One threshold on one metric column.

    ``min``/``max`` are inclusive bounds; at least one must be given.
    Several rules may share a ``reason`` code.
    """

    column: str
    reason: str
    min: float | None = None
    max: float | None = None


@dataclass
class SuiteOutcome:
    success: bool
    #: image_id -> sorted, de-duplicated reason codes (empty list when clean).
    reasons: dict[str, list[str]]
    #: JSON-serialisable GX validation result (``to_json_dict()``), with NaN/inf
    #: replaced by ``None`` so that ``json.dumps(..., allow_nan=False)`` works.
    results: dict
    #: index.html of the Data Docs site when ``docs_dir`` was given.
    docs_index: Path | None = None

    @property
    def failed(self) -> dict[str, list[str]]:
        """Only the images that failed at least one rule."""
        return {k: v for k, v in self.reasons.items() if v}


def _check_rules(rules: Sequence[Rule]) -> None:
    for rule in rules:
        if not isinstance(rule, Rule):
            raise TypeError(f"expected Rule, got {type(rule).__name__}: {rule!r}")
        if not rule.column or not rule.reason:
            raise ValueError(f"rule needs a column and a reason code: {rule!r}")
        if rule.min is None and rule.max is None:
            raise ValueError(f"rule for column {rule.column!r} has neither min nor max")
        for bound in (rule.min, rule.max):
            if bound is not None and math.isnan(float(bound)):
                raise ValueError(f"rule for column {rule.column!r} has a NaN bound")
        if rule.min is not None and rule.max is not None and float(rule.min) > float(rule.max):
            raise ValueError(
                f"rule for column {rule.column!r}: min {rule.min} > max {rule.max}"
            )


def _prepare_frame(metrics: "pandas.DataFrame", rules: Sequence[Rule]) -> "pandas.DataFrame":
    import pandas as pd

    if not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics must be a pandas DataFrame, got {type(metrics).__name__}")
    columns = sorted({r.column for r in rules})
    if IMAGE_ID in columns:
        raise ValueError(f"{IMAGE_ID!r} cannot be a metric column")

    if len(metrics) == 0:
        # No images: nothing can fail.  A frame built from an empty list of
        # rows has no columns at all, so supply them instead of raising.
        frame = pd.DataFrame({IMAGE_ID: pd.Series([], dtype=object)})
        for col in columns:
            frame[col] = pd.Series([], dtype="float64")
        return frame

    if IMAGE_ID not in metrics.columns:
        raise ValueError(f"metrics frame has no {IMAGE_ID!r} column")
    missing = [c for c in columns if c not in metrics.columns]
    if missing:
        raise ValueError(
            f"rule column(s) {missing} not in metrics frame (columns: {list(metrics.columns)})"
        )
    ids = metrics[IMAGE_ID]
    if ids.isna().any():
        raise ValueError(f"metrics frame has null {IMAGE_ID!r} values")
    ids = ids.astype(str)
    dupes = sorted(ids[ids.duplicated()].unique())
    if dupes:
        raise ValueError(f"duplicate {IMAGE_ID!r} values: {dupes[:10]}")

    frame = pd.DataFrame({IMAGE_ID: ids.to_numpy(dtype=object)})
    for col in columns:
        # Uniform float64: ints/bools/nullable dtypes become comparable with the
        # float bounds, unparseable objects become NaN and so fail not-null.
        frame[col] = pd.to_numeric(metrics[col], errors="coerce").astype("float64").to_numpy()
    return frame


def _json_clean(obj: Any) -> Any:
    """Recursively make GX's json dict strictly JSON-serialisable."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    # numpy scalars and anything else exposing .item()
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return _json_clean(item())
        except (TypeError, ValueError):
            pass
    return str(obj)


def run_suite(
    metrics: "pandas.DataFrame",
    rules: Sequence[Rule],
    *,
    suite_name: str,
    docs_dir: Path | None = None,
) -> SuiteOutcome:
    """Validate per-image metrics against ``rules`` with Great Expectations.

    Returns a :class:`SuiteOutcome`; ``success`` is True iff no image failed
    any rule.  NaN/None/unparseable metric values fail every rule on that
    column.  If ``docs_dir`` is given, static GX Data Docs are (re)built there
    (previous pages in it are removed by GX) and ``docs_index`` is its
    ``index.html``.  Raises ``ValueError`` for a rule column missing from the frame,
    a missing/null/duplicate ``image_id`` column, or malformed rules.
    """
    rules = list(rules)
    if not suite_name:
        raise ValueError("suite_name must be non-empty")
    _check_rules(rules)
    frame = _prepare_frame(metrics, rules)

    # Lazy: importing GX costs seconds; keep ``import qa.suite`` cheap.
    import great_expectations as gx
    import great_expectations.expectations as gxe
    # GX sets this logger to INFO itself: one "Created temporary directory" line per call otherwise
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)

    batch_definition = (
        context.data_sources.add_pandas(name="loupe_metrics")
        .add_dataframe_asset(name="metrics")
        .add_batch_definition_whole_dataframe(name="all_images")
    )

    # Group rules so that no two expectations are "equalish" (GX would drop the
    # duplicate silently), and so that each carries every reason it stands for.
    between: dict[tuple[str, float | None, float | None], set[str]] = defaultdict(set)
    not_null: dict[str, set[str]] = defaultdict(set)
    for rule in rules:
        lo = None if rule.min is None else float(rule.min)
        hi = None if rule.max is None else float(rule.max)
        between[(rule.column, lo, hi)].add(rule.reason)
        not_null[rule.column].add(rule.reason)

    expectations = [
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=lo, max_value=hi, mostly=1.0, meta={_META_KEY: sorted(reasons)}
        )
        for (column, lo, hi), reasons in between.items()
    ] + [
        gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0, meta={_META_KEY: sorted(reasons)})
        for column, reasons in sorted(not_null.items())
    ]
    # handed to the suite whole before it is stored: added one by one to a stored suite, each is
    # written to the store and compared with all before it (half of a call's 0.8 s, run once per image)
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))

    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}__validation", data=batch_definition, suite=suite)
    )

    actions = []
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            site_name=_DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            },
        )
        # Only our site: the ephemeral context's default "local_site" points at
        # a temp dir that no one will ever read.
        actions.append(UpdateDataDocsAction(name="update_data_docs", site_names=[_DOCS_SITE]))

    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}__checkpoint",
            validation_definitions=[validation],
            actions=actions,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [IMAGE_ID],
            },
        )
    )
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame})
    (suite_result,) = checkpoint_result.run_results.values()

    reasons: dict[str, set[str]] = {image_id: set() for image_id in frame[IMAGE_ID]}
    for er in suite_result.results:
        exc = er.exception_info or {}
        # exception_info is either {"raised_exception": ...} or keyed per metric.
        infos = [exc] if "raised_exception" in exc else list(exc.values())
        raised = [i for i in infos if isinstance(i, dict) and i.get("raised_exception")]
        if raised:
            raise RuntimeError(
                f"GX failed to evaluate {er.expectation_config.type} on column "
                f"{er.expectation_config.kwargs.get('column')!r}: "
                f"{raised[0].get('exception_message')}"
            )
        if er.success:
            continue
        codes = (er.expectation_config.meta or {}).get(_META_KEY)
        if not codes:
            raise RuntimeError(f"GX result without reason codes: {er.expectation_config}")
        for row in er.result.get("unexpected_index_list") or []:
            reasons[str(row[IMAGE_ID])].update(codes)

    outcome_reasons = {image_id: sorted(codes) for image_id, codes in reasons.items()}
    success = not any(outcome_reasons.values())
    if success != bool(suite_result.success):  # pragma: no cover - invariant
        raise RuntimeError(
            f"GX success={suite_result.success} disagrees with per-image reasons"
        )

    docs_index: Path | None = None
    if docs_dir is not None:
        docs_index = docs_dir / "index.html"
        if not docs_index.is_file():
            raise RuntimeError(f"GX data docs were not written to {docs_dir}")

    return SuiteOutcome(
        success=success,
        reasons=outcome_reasons,
        results=_json_clean(suite_result.to_json_dict()),
        docs_index=docs_index,
    )
