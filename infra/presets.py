"""Presets: what a studio wants done to a shoot, as validated TOML data.

A preset names the stage parameters, the background mode, the QA thresholds
and the export variants. Its hash is part of an image's cache key, so a
changed preset re-processes the shoot.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.errors import OperatorError

PRESET_DIR = Path(__file__).with_name("presets")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportSpec(_Strict):
    """One output variant of an approved image."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    format: Literal["jpeg", "png", "tiff", "webp"]
    grid: Literal["source", "canvas"] = Field(
        "canvas", description="'source': keep the source's framing and pixels; 'canvas': recompose the piece")
    long_edge: int | None = Field(None, ge=64, le=20000, description="canvas size in px (canvas grid only)")
    margin: float = Field(0.08, ge=0, le=0.4, description="free border around the piece, fraction of the canvas")
    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality")
    bits: Literal[8, 16] = 8
    alpha: bool = Field(False, description="keep transparency (png/webp/tiff only)")
    compression: Literal["none", "zlib", "lzw"] = "zlib"
    level: int = Field(1, ge=0, le=9, description="deflate level for png/tiff; low is fast, files a little larger")


class QaRule(_Strict):
    column: str
    reason: str
    min: float | None = None
    max: float | None = None


class Preset(_Strict):
    name: str
    version: int = 1
    background: Literal["white", "transparent", "color"] = "white"
    background_color: tuple[int, int, int] = (255, 255, 255)
    shadow: bool = False
    skip: tuple[str, ...] = Field((), description="stages to leave out")
    stages: dict[str, dict] = Field(default_factory=dict, description="per-stage parameter overrides")
    qa: tuple[QaRule, ...] = ()
    exports: tuple[ExportSpec, ...]
    small_sources: Literal["review", "own_size"] = Field(
        "review", description="a source too small for the canvas sizes: 'review' renders the canvases at their "
                              "size (the upscale metric and its QA rule send it to a person); 'own_size' shrinks "
                              "those canvases so the piece is never enlarged")

    @property
    def digest(self) -> str:
        """Stable hash of everything that changes pixels or routing."""
        data = self.model_dump(mode="json")
        for key, default in _ADDED_LATER.items():   # so upgrading Loupe does not re-process every finished image
            if data[key] == default:
                del data[key]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_ADDED_LATER = {"small_sources": "review"}   # fields added since presets were first hashed, at their default


class PresetError(OperatorError, ValueError):
    pass


def load_preset(name_or_path: str | Path = "catalog") -> Preset:
    """Load a built-in preset by name, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
            raise PresetError(f"unknown preset {name_or_path!r}; built-in presets: {known}, or give a .toml path")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(f"{path}: {exc}") from exc
    return parse_preset(data, source=str(path))


def parse_preset(data: dict, *, source: str = "<preset>") -> Preset:
    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise PresetError("invalid preset\n" + "\n".join(lines)) from exc
