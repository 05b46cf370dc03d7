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
exported, no manifest row); the cut-out and QA take the backdrop from it. A file named
``<anything>_card.<ext>`` is a frame of a grey card under the shoot's light, filling at
least the middle half of each side: the light's colour is read off it (``flows.shoot``).
Neither is a source.

Hidden files and subfolders are ignored (and listed as such). A symbolic link is
never followed: it is a source row, refused, so nothing outside the shoot is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
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
    card: Location | None = None     # a grey card's frame under the shoot's light
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


def list_shoot(folder: "Location | Path | str") -> Shoot:
    """List a shoot folder's sources (sorted, not yet hashed: ``sha256`` empty) and read its sidecar
    (a folder or an S3 prefix). ``Identities`` or ``hashed`` names them by their content."""
    folder = Location.of(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"shoot folder not found: {folder}")
    config, problems = read_sidecar(folder / SIDECAR)
    mapping = {str(k): str(v) for k, v in config.get("sku", {}).items()}
    sources, plates, cards, ignored = [], [], [], []
    for path, is_dir in folder.entries():
        local = path.local_path()
        if path.name == SIDECAR:
            continue
        if path.name.startswith("."):
            ignored.append(f"{path.name} (hidden)")
            continue
        if local is not None and local.is_symlink():
            sources.append(Source(folder.name, path, "", *sku_and_view(path.stem, mapping),
                                  refused=f"symlink: {path.name} points to {os.readlink(local)}; links are not followed"))
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
        if path.stem.lower().endswith("_card"):
            cards.append(path)
            continue
        sources.append(Source(folder.name, path, "", *sku_and_view(path.stem, mapping)))
    for kind, found in (("clean plate", plates), ("grey card", cards)):    # the first by name is the shoot's
        ignored += [f"{extra.name} (a second {kind}: {found[0].name} is the shoot's)" for extra in found[1:]]
    return Shoot(folder.name, folder, tuple(sources), config.get("preset"), config.get("background"),
                 config.get("stages", {}), plates[0] if plates else None, cards[0] if cards else None,
                 tuple(ignored), tuple(problems))


def hash_threads(count: int) -> int:
    return max(1, min(count, os.cpu_count() or 1, HASH_THREADS))


def hashed(shoot: Shoot) -> Shoot:
    """``shoot`` with every source hashed (several at once: reads and hashlib release the GIL)."""
    with ThreadPoolExecutor(max_workers=hash_threads(len(shoot.sources))) as pool:
        digests = list(pool.map(source_digest, (src.path for src in shoot.sources)))
    return replace(shoot, sources=tuple(replace(src, sha256=digest) for src, digest in zip(shoot.sources, digests)))


class Identities:
    """A shoot's sources named by their content in folder order, hashed a few files ahead of their use on
    a few threads, so a big shoot's first images start while the rest is still unread: 1,000 frames of
    24 MP RAW are 48 GB, ~30 s of one core from the page cache (issue 13)."""

    AHEAD = 2 * HASH_THREADS

    def __init__(self, sources: tuple[Source, ...], ahead: int = AHEAD):
        """``ahead``: files hashed ahead of ``ready``'s calls (0: only those ``named`` asks for)."""
        self._pool = ThreadPoolExecutor(max_workers=hash_threads(len(sources)))
        self._todo = deque(sources)
        self._queued: deque[tuple[Source, Future]] = deque()
        self._memo: dict[str, Future] = {}
        self.ahead = ahead
        self._top_up()

    @property
    def done(self) -> bool:
        """Every source has been handed out by ``ready``."""
        return not self._todo and not self._queued

    def named(self, sources: list[Source]) -> list[Source]:
        """``sources`` with their digests, hashed now (several at once) unless they were already; those
        that cannot be read are left out. For the sensor-dust survey's sample and a single re-run."""
        futures = [(src, self._future(src)) for src in sources]
        out = []
        for src, future in futures:
            try:
                out.append(replace(src, sha256=future.result()))
            except OSError:
                pass
        return out

    def ready(self, wait: float = 0.0) -> list[Source]:
        """The next sources in folder order whose digests are known, waiting up to ``wait`` seconds for
        the first of them (at most ``ahead``: those queued before the call); ``[]`` when none is ready in
        time or all were handed out."""
        out = []
        for _ in range(len(self._queued)):
            src, future = self._queued[0]
            try:
                digest = future.result(timeout=wait if not out else 0)
            except FutureTimeout:
                break
            except OSError as exc:   # gone or unreadable since it was listed: refused, the run goes on
                digest = hashlib.sha256(f"unreadable:{src.path.name}".encode()).hexdigest()
                src = replace(src, refused=f"unreadable: {src.path.name}: {exc.strerror or exc}")
            self._queued.popleft()
            out.append(replace(src, sha256=digest))
        self._top_up()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Identities:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _future(self, src: Source) -> Future:
        key = str(src.path)
        if key not in self._memo:
            self._memo[key] = self._pool.submit(source_digest, src.path)
        return self._memo[key]

    def _top_up(self) -> None:
        while self._todo and len(self._queued) < self.ahead:
            src = self._todo.popleft()
            self._queued.append((src, self._future(src)))


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
