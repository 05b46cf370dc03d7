"""The run's paper trail: ``manifest.csv`` (one row per source file) and ``report.html``."""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from infra.catalog import Catalog
from infra.imageio import atomic_write
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
        row.update(preset=r["preset"], error=r["error"])
        rows.append(row)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS + EXTRA_METRICS + ["preset", "error"])


def write_manifest(catalog: Catalog, out: Path) -> Path:
    buf = io.StringIO()
    manifest_frame(catalog).to_csv(buf, index=False, float_format="%.4f")
    path = Path(out) / "manifest.csv"
    atomic_write(path, buf.getvalue().encode())
    return path


def _thumb(out: Path, row: pd.Series) -> tuple[str, str]:
    """Relative (before, after) preview paths for the contact sheet, when they exist."""
    review = out / "review" / row["shoot"] / row["image_id"]
    if (review / "after.jpg").exists():
        return (str((review / "before.jpg").relative_to(out)), str((review / "after.jpg").relative_to(out)))
    for part in str(row["exports"] or "").split(";"):
        if "_thumb." in part:
            return "", part
    return "", ""


def write_report(catalog: Catalog, out: Path, review_url: str | None = None) -> Path:
    """A self-contained HTML page: counts, reasons, metric summary, contact sheet."""
    out = Path(out)
    df = manifest_frame(catalog)
    status = Counter(df["status"]) if len(df) else Counter()
    reasons = Counter(code for rs in df["reasons"].fillna("") for code in str(rs).split(";") if code)
    metric_cols = [c for c in ("delta_e_mean", "delta_e_p95", "detail_retention", "edge_recall", "mask_coverage", "seconds") if c in df]
    summary = df[metric_cols].apply(pd.to_numeric, errors="coerce").describe().T.round(3) if len(df) else pd.DataFrame()
    e = html.escape
    cards = []
    for _, row in df.iterrows():
        before, after = _thumb(out, row)
        imgs = "".join(f'<img src="{e(p)}" alt="{e(label)}" loading="lazy">' for p, label in ((before, "before"), (after, "after")) if p)
        link = f'<a href="{e(review_url)}/image/{e(row["image_id"])}">review</a>' if review_url and row["status"] == "review" else ""
        cards.append(f'<figure class="{e(row["status"])}">{imgs}<figcaption>{e(row["shoot"])}/{e(row["source"])}'
                     f'<br><b>{e(row["status"])}</b> {e(str(row["reasons"] or ""))} {link}</figcaption></figure>')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Loupe QA report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:6px;
width:330px;vertical-align:top}}figure img{{width:160px;height:160px;object-fit:contain;background:#eee;margin:1px}}
.review figcaption b{{color:#b60}}.rejected figcaption b{{color:#b00}}.exported figcaption b{{color:#070}}</style></head><body>
<h1>Loupe QA report</h1>
<h2>Status</h2><table><tr>{''.join(f'<th>{e(k)}</th>' for k in ('exported', 'review', 'rejected'))}<th>total</th></tr>
<tr>{''.join(f'<td>{status.get(k, 0)}</td>' for k in ('exported', 'review', 'rejected'))}<td>{len(df)}</td></tr></table>
<h2>Reasons</h2><table><tr><th>reason</th><th>images</th></tr>{''.join(f'<tr><td>{e(k)}</td><td>{v}</td></tr>' for k, v in reasons.most_common())}</table>
<h2>Metrics</h2>{summary.to_html() if len(summary) else '<p>none</p>'}
<h2>Contact sheet</h2>{''.join(cards)}
</body></html>"""
    path = out / "report.html"
    atomic_write(path, page.encode())
    return path
