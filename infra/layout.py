"""Where each kind of output lives under OUT: the one owner of that layout.

    OUT/manifest.csv, OUT/report.html
    OUT/exports/<shoot>/<sku>_<view>_<name>.<ext>   published, catalog-ready files
    OUT/review/<shoot>/<image_id>/                  previews of an image waiting for a person
    OUT/qa/<shoot>/                                 metrics, Great Expectations results, thumbs/, reruns/
    OUT/.staging/<shoot>/<image_id>/                rendered exports and previews before routing
    OUT/.state/                                     the catalog database (default ``--state``; for an
                                                    s3:// OUT, a local folder: see ``default_state``)

OUT is a storage root (``infra.storage``: a folder or ``s3://bucket/prefix``). The catalog stores
paths relative to OUT (``rel``), so a run started from one directory and a reviewer's command from
another agree on every file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from infra.storage import Location

# Characters that would break a file name, a shell line or the manifest's ``;``-joined exports column.
_UNSAFE = re.compile(r"[^\w.-]+")


def export_stem(sku: str, view: str) -> str:
    """``<sku>_<view>`` as it appears in export file names: letters (any script), digits, ``._-`` only."""
    return _UNSAFE.sub("-", f"{sku}_{view}").strip("-.") or "image"


def default_state(out: "str | Path | Location") -> str:
    """The catalog's default place: OUT/.state, or for an object-store OUT a local folder
    (``$LOUPE_STATE_HOME``, default ~/.local/state/loupe, then bucket/prefix): a database is not an object."""
    root = Location.of(out)
    if not root.is_s3:
        return str(root.local_path() / ".state")
    home = Path(os.environ.get("LOUPE_STATE_HOME", "~/.local/state/loupe")).expanduser()
    url = urlparse(root.root)
    return str(home / url.netloc / url.path.strip("/"))


@dataclass(frozen=True)
class Layout:
    root: Location

    @classmethod
    def of(cls, out: "str | Path | Location") -> "Layout":
        return cls(Location.of(out))

    @property
    def manifest(self) -> Location:
        return self.root / "manifest.csv"

    @property
    def report(self) -> Location:
        return self.root / "report.html"

    def staging(self, shoot: str, image_id: str) -> Location:
        return self.root / ".staging" / shoot / image_id

    def staging_root(self) -> Location:
        return self.root / ".staging"

    def exports(self, shoot: str) -> Location:
        return self.root / "exports" / shoot

    def export_file(self, shoot: str, sku: str, view: str, file_name: str) -> Location:
        return self.exports(shoot) / f"{export_stem(sku, view)}_{file_name}"

    def review(self, shoot: str, image_id: str) -> Location:
        return self.root / "review" / shoot / image_id

    def qa(self, shoot: str) -> Location:
        return self.root / "qa" / shoot

    def rerun_qa(self, shoot: str, image_id: str) -> Location:
        """QA tables of a reviewer's re-run go beside the shoot's, not over them."""
        return self.qa(shoot) / "reruns" / image_id

    def thumbs(self, shoot: str, image_id: str) -> Location:
        return self.qa(shoot) / "thumbs" / image_id

    def rel(self, loc: Location) -> str:
        return loc.relative_to(self.root)

    def abs(self, rel: str) -> Location:
        """A path the catalog stored: relative to OUT (an absolute path from an older catalog stays as it is)."""
        return Location.of(rel) if rel.startswith(("/", "s3://")) else self.root / rel

    def partial_files(self):
        """Temporary files a killed local writer left behind (``.<name>.*.part``; S3 puts are atomic)."""
        base = self.root.local_path()
        return [] if base is None else (p for p in base.rglob(".*.part") if p.is_file())
