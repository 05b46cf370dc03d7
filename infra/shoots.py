"""Shoot folders: which files are sources, and what SKU/view each one is.

``ROOT/<shoot-id>/*.{dng,...,png}`` with an optional ``shoot.toml``:

    preset = "catalog"            # or a path to a .toml preset
    background = "transparent"    # overrides the preset's background mode
    [stages.neutralize]           # per-stage overrides on top of the preset's
    kelvin = 3200                 # e.g. the light read off a grey card
    [sku]                         # file stem -> "SKU_view" when names do not follow it
    "IMG_0042" = "R1001_front"

A file named ``<anything>_plate.<ext>`` is the shoot's clean plate: a frame of the
empty backdrop, same camera position and light. It is not a source (never
exported, no manifest row); the cut-out and QA take the backdrop from it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


_NAME = re.compile(r"^(?P<sku>[^_]+?)(?:_(?P<view>.+))?$")


@dataclass(frozen=True)
class Source:
    shoot: str
    path: Path
    sha256: str
    sku: str
    view: str

    @property
    def image_id(self) -> str:
        return self.sha256[:16]


@dataclass(frozen=True)
class Shoot:
    shoot_id: str
    folder: Path
    sources: tuple[Source, ...]
    preset: str | None
    background: str | None
    stages: dict[str, dict] = field(default_factory=dict)
    plate: Path | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sku_and_view(stem: str, mapping: dict[str, str]) -> tuple[str, str]:
    name = mapping.get(stem, stem)
    m = _NAME.match(name)
    return m["sku"], (m["view"] or "main")


def read_shoot(folder: Path) -> Shoot:
    """List a shoot folder's sources (sorted, hidden files ignored) and its sidecar."""
    if not folder.is_dir():
        raise FileNotFoundError(f"shoot folder not found: {folder}")
    sidecar = folder / "shoot.toml"
    config = tomllib.loads(sidecar.read_text()) if sidecar.exists() else {}
    mapping = {str(k): str(v) for k, v in config.get("sku", {}).items()}
    sources, plates = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name == "shoot.toml":
            continue
        if path.stem.lower().endswith("_plate"):
            plates.append(path)
            continue
        sku, view = sku_and_view(path.stem, mapping)
        sources.append(Source(folder.name, path, file_sha256(path), sku, view))
    return Shoot(folder.name, folder, tuple(sources), config.get("preset"), config.get("background"),
                 config.get("stages", {}), plates[0] if plates else None)

