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

Hidden files and subfolders are ignored (and listed as such). A symbolic link is
never followed: it is a source row, refused, so nothing outside the shoot is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from infra.layout import export_stem
from infra.storage import Location

_NAME = re.compile(r"^(?P<sku>[^_]+?)(?:_(?P<view>.+))?$")
SIDECAR = "shoot.toml"
HASH_THREADS = 8     # sources hashed at once: more than a disk feeds (~1.4 GB/s per core); an S3 object is read whole
SIDECAR_KEYS = {"preset": str, "background": str, "stages": dict, "sku": dict}


@dataclass(frozen=True)
class Source:
    shoot: str
    path: Location
    sha256: str
    sku: str
    view: str
    refused: str = ""          # why the file is rejected without being read ("" for a readable candidate)

    @property
    def image_id(self) -> str:
        return self.sha256[:16]


@dataclass(frozen=True)
class Shoot:
    shoot_id: str
    folder: Location
    sources: tuple[Source, ...]
    preset: str | None
    background: str | None
    stages: dict[str, dict] = field(default_factory=dict)
    plate: Location | None = None
    ignored: tuple[str, ...] = ()     # "<name> (why)" for what is not a source
    problems: tuple[str, ...] = ()    # shoot.toml errors: the shoot's files are rejected with these


def file_sha256(loc: Location) -> str:
    path = loc.local_path()
    if path is None:
        return hashlib.sha256(loc.read_bytes()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digest(loc: Location) -> str:
    """A source's identity: its content's SHA-256, or for a symbolic link (never followed) that
    of its name and target."""
    local = loc.local_path()
    if local is not None and local.is_symlink():
        return hashlib.sha256(f"symlink:{loc.name}->{os.readlink(local)}".encode()).hexdigest()
    return file_sha256(loc)


def sku_and_view(stem: str, mapping: dict[str, str]) -> tuple[str, str]:
    name = mapping.get(stem, stem)
    m = _NAME.match(name)
    return m["sku"], (m["view"] or "main")


def read_sidecar(path: Location) -> tuple[dict, list[str]]:
    """``shoot.toml``'s settings and one line per problem in it (naming the file, line or key)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}, []
    except UnicodeDecodeError as exc:
        return {}, [f"{path}: {exc}"]
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: {exc}"]
    problems = [f"{path}: unknown key {key!r} (known: {', '.join(SIDECAR_KEYS)})"
                for key in config if key not in SIDECAR_KEYS]
    problems += [f"{path}: {key} must be a {kind.__name__}, got {type(config[key]).__name__}"
                 for key, kind in SIDECAR_KEYS.items() if key in config and not isinstance(config[key], kind)]
    for name, table in config.get("stages", {}).items() if isinstance(config.get("stages"), dict) else ():
        if not isinstance(table, dict):
            problems.append(f"{path}: stages.{name} must be a table ([stages.{name}])")
    if problems:
        return {}, problems
    return config, []


def read_shoot(folder: "Location | Path | str") -> Shoot:
    """List a shoot folder's sources (sorted) and read its sidecar (a folder or an S3 prefix)."""
    folder = Location.of(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"shoot folder not found: {folder}")
    config, problems = read_sidecar(folder / SIDECAR)
    mapping = {str(k): str(v) for k, v in config.get("sku", {}).items()}
    listed, plates, ignored = [], [], []     # listed: (path, sku, view, why refused or "")
    for path, is_dir in folder.entries():
        local = path.local_path()
        if path.name == SIDECAR:
            continue
        if path.name.startswith("."):
            ignored.append(f"{path.name} (hidden)")
            continue
        if local is not None and local.is_symlink():
            listed.append((path, *sku_and_view(path.stem, mapping),
                           f"symlink: {path.name} points to {os.readlink(local)}; links are not followed"))
            continue
        if is_dir:
            ignored.append(f"{path.name}/ (subfolder: shoots are not nested)")
            continue
        if local is not None and not local.is_file():
            ignored.append(f"{path.name} (not a regular file)")
            continue
        if path.stem.lower().endswith("_plate"):
            plates.append(path)
            continue
        listed.append((path, *sku_and_view(path.stem, mapping), ""))
    # several files at once (reads and hashlib release the GIL): 1,000 frames of 24 MP RAW are 48 GB,
    # 35 s on one core from the page cache, before the first image
    with ThreadPoolExecutor(max_workers=max(1, min(len(listed), os.cpu_count() or 1, HASH_THREADS))) as pool:
        digests = list(pool.map(source_digest, (path for path, *_ in listed)))
    sources = [Source(folder.name, path, digest, sku, view, refused=refused)
               for (path, sku, view, refused), digest in zip(listed, digests)]
    return Shoot(folder.name, folder, tuple(sources), config.get("preset"), config.get("background"),
                 config.get("stages", {}), plates[0] if plates else None, tuple(ignored), tuple(problems))


def assign_views(sources: tuple[Source, ...], known: dict[str, str]) -> dict[str, str]:
    """A view per source file such that no two share an export name (``export_stem``).

    Files already in the catalog keep the view their exports carry (``known``: file name -> view);
    then each file takes its own name's view if free; the rest get the first free ``<view>-N``.
    ``X1_front.png`` beside ``X1_front-2.jpg`` gives ``front``, ``front-2`` and ``front-3``.
    """
    views: dict[str, str] = {}
    taken: set[str] = set()
    for src in sources:
        if src.path.name in known:
            views[src.path.name] = known[src.path.name]
            taken.add(export_stem(src.sku, known[src.path.name]).lower())
    later = []
    for src in sources:
        if src.path.name in views:
            continue
        stem = export_stem(src.sku, src.view).lower()   # lower: exports must not collide on a case-blind disk
        if stem in taken:
            later.append(src)
        else:
            views[src.path.name] = src.view
            taken.add(stem)
    for src in later:
        n = 2
        while export_stem(src.sku, f"{src.view}-{n}").lower() in taken:
            n += 1
        views[src.path.name] = f"{src.view}-{n}"
        taken.add(export_stem(src.sku, views[src.path.name]).lower())
    return views
