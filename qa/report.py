"""The run's paper trail: ``manifest.csv`` (one row per source file) and ``report.html``."""

from __future__ import annotations

import html
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from infra.catalog import Catalog
from infra.layout import Layout
from infra.storage import Location
from qa.metrics import METRIC_DOCS

MANIFEST_COLUMNS = [
    "shoot", "source", "image_id", "sku", "view", "status", "reasons", "delta_e_mean", "delta_e_p95",
    "detail_retention", "edge_recall", "mask_coverage", "seconds", "exports",
]
EXTRA_METRICS = [m for m in METRIC_DOCS if m not in MANIFEST_COLUMNS]


def manifest_frame(catalog: Catalog) -> pd.DataFrame:
    rows = []
    for r in catalog.rows():
        metrics = json.loads(r["metrics"] or "{}")
        exports = json.loads(r["exports"] or "{}")
        row = {c: r.get(c, "") for c in ("shoot", "source", "image_id", "sku", "view", "status", "reasons", "seconds")}
        row.update({m: metrics.get(m) for m in ("delta_e_mean", "delta_e_p95", "detail_retention", "edge_recall", "mask_coverage")})
        row["exports"] = ";".join(exports[k] for k in sorted(exports))
        row.update({m: metrics.get(m) for m in EXTRA_METRICS})
        row.update(preset=r["preset"], error=r["error"], node=r.get("node") or "")
        rows.append(row)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS + EXTRA_METRICS + ["preset", "error", "node"])


def write_manifest(catalog: Catalog, out: "str | Path | Location") -> Location:
    buf = io.StringIO()
    manifest_frame(catalog).to_csv(buf, index=False, float_format="%.4f")
    target = Layout.of(out).manifest
    target.write_bytes(buf.getvalue().encode())
    return target


THUMB_EDGE = 240
REVIEW_URL = os.environ.get("LOUPE_REVIEW_URL", "http://127.0.0.1:8765")  # where `loupe review serve` listens
STATUSES = ("exported", "review", "rejected", "retryable")


def write_thumbnails(preview: Location, dest: Location) -> None:
    """Small before/after JPEGs for the report's contact sheet, from the image's review previews."""
    from PIL import Image

    for name in ("before", "after"):
        try:
            data = (preview / f"{name}.jpg").read_bytes()
        except FileNotFoundError:
            continue
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((THUMB_EDGE, THUMB_EDGE), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=85)
        (dest / f"{name}.jpg").write_bytes(buf.getvalue())


def _histogram_svg(values: pd.Series, rules: list, width: int = 300, height: int = 90, bins: int = 24) -> str:
    """An inline SVG histogram of one metric with its QA thresholds as red lines."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "<svg></svg>"
    limits = [x for r in rules for x in (r.min, r.max) if x is not None]
    lo, hi = min([v.min(), *limits]), max([v.max(), *limits])
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    x = lambda t: 4 + (t - lo) / (hi - lo) * (width - 8)  # noqa: E731
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{x(edges[i]):.1f}" y="{height - 14 - c / top * (height - 20):.1f}" '
        f'width="{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}" height="{c / top * (height - 20):.1f}" fill="#579"/>'
        for i, c in enumerate(counts) if c)
    lines = "".join(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="2" y2="{height - 14}" stroke="#c00" stroke-width="1.5">'
                    f'<title>{html.escape(r.reason)}: {"min" if t == r.min else "max"} {t:g}</title></line>'
                    for r in rules for t in (r.min, r.max) if t is not None)
    axis = (f'<text x="4" y="{height - 2}" font-size="10">{lo:.3g}</text>'
            f'<text x="{width - 4}" y="{height - 2}" font-size="10" text-anchor="end">{hi:.3g}</text>')
    return f'<svg width="{width}" height="{height}" role="img">{bars}{lines}{axis}</svg>'


def write_report(catalog: Catalog, out: Path, review_url: str | None = REVIEW_URL, rules: tuple = ()) -> Path:
    """A self-contained HTML page: counts by status, shoot and reason, metric distributions with the
    QA thresholds, and a before/after contact sheet with links into the review app."""
    df = manifest_frame(catalog)
    e = html.escape
    status = Counter(df["status"]) if len(df) else Counter()
    reasons = Counter(code for rs in df["reasons"].fillna("") for code in str(rs).split(";") if code)
    by_shoot = (df.groupby("shoot")["status"].value_counts().unstack(fill_value=0).reindex(columns=STATUSES, fill_value=0)
                if len(df) else pd.DataFrame(columns=STATUSES))
    ruled = sorted({r.column for r in rules if r.column in df})
    plotted = ruled + [c for c in ("delta_e_mean", "detail_retention", "edge_recall", "seconds") if c in df and c not in ruled]
    plots = "".join(
        f'<figure class="plot"><figcaption><b>{e(c)}</b><br><small>{e(METRIC_DOCS.get(c, "seconds per image"))}</small>'
        f'</figcaption>{_histogram_svg(df[c], [r for r in rules if r.column == c])}</figure>' for c in plotted)
    cards = []
    layout = Layout.of(out)
    made = {layout.rel(loc) for loc in (layout.root / "qa").files()}     # one listing, not a look per image
    for _, row in df.iterrows():
        thumbs = [layout.rel(layout.thumbs(row["shoot"], row["image_id"]) / f"{k}.jpg") for k in ("before", "after")]
        imgs = "".join(f'<img src="{e(t)}" alt="{k}" loading="lazy">'
                       for k, t in zip(("before", "after"), thumbs) if t in made)
        link = (f' <a href="{e(review_url.rstrip("/"))}/image/{e(row["image_id"])}">review</a>'
                if review_url and row["status"] == "review" else "")
        cards.append(f'<figure class="{e(row["status"])}">{imgs}<figcaption>{e(row["shoot"])}/{e(row["source"])}'
                     f'<br><b>{e(row["status"])}</b> {e(str(row["reasons"] or ""))}{link}</figcaption></figure>')
    queue = (f'<p><a href="{e(review_url.rstrip("/"))}/">Open the review queue</a> '
             f'({status.get("review", 0)} waiting)</p>' if review_url else "")
    shoot_rows = "".join(f'<tr><td>{e(str(sh))}</td>{"".join(f"<td>{int(n)}</td>" for n in r)}</tr>'
                         for sh, r in by_shoot.iterrows())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Loupe QA report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:6px;
width:330px;vertical-align:top}}figure img{{width:160px;height:160px;object-fit:contain;background:#eee;margin:1px}}
figure.plot{{width:310px}}.review figcaption b{{color:#b60}}.rejected figcaption b{{color:#b00}}
.exported figcaption b{{color:#070}}</style></head><body>
<h1>Loupe QA report</h1>{queue}
<h2>Status</h2><table><tr>{''.join(f'<th>{k}</th>' for k in STATUSES)}<th>total</th></tr>
<tr>{''.join(f'<td>{status.get(k, 0)}</td>' for k in STATUSES)}<td>{len(df)}</td></tr></table>
<table><tr><th>shoot</th>{''.join(f'<th>{k}</th>' for k in STATUSES)}</tr>{shoot_rows}</table>
<h2>Reasons</h2><table><tr><th>reason</th><th>images</th></tr>{''.join(f'<tr><td>{e(k)}</td><td>{v}</td></tr>' for k, v in reasons.most_common())}</table>
<h2>Metric distributions</h2><p>Red lines: the preset's QA thresholds (hover for the reason code).</p>{plots}
<h2>Contact sheet</h2><p>Before | after, as QA saw them.</p>{''.join(cards)}
</body></html>"""
    layout.report.write_bytes(page.encode())
    return layout.report
