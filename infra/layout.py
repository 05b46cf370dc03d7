"""Where each kind of output lives under OUT: the one owner of that layout.

    OUT/manifest.csv, OUT/report.html
    OUT/exports/<shoot>/<sku>_<view>_<name>.<ext>   published, catalog-ready files
    OUT/review/<shoot>/<image_id>/                  previews of an image waiting for a person
    OUT/qa/<shoot>/                                 metrics, Great Expectations results, thumbs/, reruns/
    OUT/.staging/<shoot>/<image_id>/                rendered exports and previews before routing
    OUT/.state/                                     the catalog database (default ``--state``)

The catalog stores paths relative to OUT (``rel``), so a run started from one
directory and a reviewer's command from another agree on every file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Characters that would break a file name, a shell line or the manifest's ``;``-joined exports column.
_UNSAFE = re.compile(r"[^\w.-]+")


def export_stem(sku: str, view: str) -> str:
    """``<sku>_<view>`` as it appears in export file names: letters (any script), digits, ``._-`` only."""
    return _UNSAFE.sub("-", f"{sku}_{view}").strip("-.") or "image"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def state(self) -> Path:
        return self.root / ".state"

    def staging(self, shoot: str, image_id: str) -> Path:
        return self.root / ".staging" / shoot / image_id

    def exports(self, shoot: str) -> Path:
        return self.root / "exports" / shoot

    def export_file(self, shoot: str, sku: str, view: str, file_name: str) -> Path:
        return self.exports(shoot) / f"{export_stem(sku, view)}_{file_name}"

    def review(self, shoot: str, image_id: str) -> Path:
        return self.root / "review" / shoot / image_id

    def qa(self, shoot: str) -> Path:
        return self.root / "qa" / shoot

    def rerun_qa(self, shoot: str, image_id: str) -> Path:
        """QA tables of a reviewer's re-run go beside the shoot's, not over them."""
        return self.qa(shoot) / "reruns" / image_id

    def thumbs(self, shoot: str, image_id: str) -> Path:
        return self.qa(shoot) / "thumbs" / image_id

    def rel(self, path: Path | str) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def abs(self, rel: str) -> Path:
        return self.root / rel   # an absolute path (older catalogs) stays as it is

    def partial_files(self):
        """Temporary files a killed writer left behind (``atomic_write``'s ``.<name>.*.part``)."""
        return (p for p in self.root.rglob(".*.part") if p.is_file())
