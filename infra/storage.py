"""Storage roots: a local folder (a path or ``file://``) or an S3 prefix (``s3://bucket/prefix``).

``Location`` is a small path-like value (picklable: two strings) with the file operations Loupe
needs, the same on both backends, so shoots, OUT and Ray workers read and write through it and a
cluster needs no shared filesystem:

- ``write_bytes`` is atomic: a local file is written beside and renamed; an S3 object appears
  only when its upload completes (a multipart upload above ``PART_SIZE``);
- ``replace`` (publishing) is a rename, or on S3 a server-side copy then a delete;
- S3 calls are retried with back-off for ``LOUPE_S3_RETRY_SECONDS`` (default 60) so a short outage
  passes unnoticed; after that they raise ``StorageError``, an ``OSError`` (the flow's transient
  class: the image is retried, then left ``retryable``).

S3 settings (MinIO or any S3 endpoint) come from ``LOUPE_S3_ENDPOINT`` (e.g.
``http://127.0.0.1:9000``; ``https://`` for TLS), ``LOUPE_S3_ACCESS_KEY``, ``LOUPE_S3_SECRET_KEY``,
``LOUPE_S3_REGION``, or from the TOML file named by ``LOUPE_S3_CONFIG`` (keys ``endpoint``,
``access_key``, ``secret_key``, ``region``). Keys never appear in messages or logs.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

PART_SIZE = 16 << 20          # multipart above this (large TIFF masters)


class StorageError(OSError):
    """Storage unreachable or refusing after retries (one line, endpoint named, never the keys)."""


@dataclass(frozen=True)
class Location:
    root: str                  # "/abs/dir" or "s3://bucket/prefix"
    key: str = ""              # "/"-separated path under the root

    # --- naming ------------------------------------------------------------------
    @classmethod
    def of(cls, where: "str | Path | Location") -> "Location":
        """A location from a path, ``file://`` URL, ``s3://`` URL or a location."""
        if isinstance(where, Location):
            return where
        text = str(where)
        if text.startswith("s3://"):
            return cls(text.rstrip("/"))
        if text.startswith("file://"):
            text = urlparse(text).path
        return cls(str(Path(text).resolve()))

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def __truediv__(self, name: str) -> "Location":
        key = str(PurePosixPath(self.key, str(name))) if self.key else str(PurePosixPath(str(name)))
        return Location(self.root, key)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name if self.key else PurePosixPath(self.root).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "Location":
        if self.key:
            parent = str(PurePosixPath(self.key).parent)
            return Location(self.root, "" if parent == "." else parent)
        if self.is_s3:
            return Location(self.root.rsplit("/", 1)[0]) if self.root.count("/") > 2 else self
        return Location(str(Path(self.root).parent))

    def relative_to(self, other: "Location") -> str:
        if self.root != other.root:
            return str(PurePosixPath(str(self)).relative_to(str(other)))
        return str(PurePosixPath(self.key).relative_to(other.key or "."))

    def __str__(self) -> str:
        if not self.key:
            return self.root
        return f"{self.root}/{self.key}" if self.is_s3 else str(Path(self.root) / self.key)

    def __fspath__(self) -> str:
        """A local location is usable wherever a path is (``open``, ``Path``); an S3 one is not."""
        if self.is_s3:
            raise TypeError(f"{self} is in object storage, not a file system path")
        return str(self)

    def local_path(self) -> Path | None:
        """The file system path, for a local root (None on S3)."""
        return None if self.is_s3 else Path(self.root) / self.key

    # --- reading -----------------------------------------------------------------
    def read_bytes(self) -> bytes:
        if not self.is_s3:
            return self.local_path().read_bytes()
        return _s3(self, lambda c, b, k: _read_object(c, b, k))

    @contextmanager
    def local_file(self):
        """A local path to the file's bytes (the file itself, or a temporary download from S3)."""
        if not self.is_s3:
            yield self.local_path()
            return
        with tempfile.TemporaryDirectory(prefix="loupe-") as tmp:
            path = Path(tmp) / self.name
            _s3(self, lambda c, b, k: c.fget_object(b, k, str(path)))
            yield path

    def exists(self) -> bool:
        if not self.is_s3:
            return self.local_path().exists()
        return _s3(self, lambda c, b, k: _stat(c, b, k) is not None) or self.is_dir()

    def is_dir(self) -> bool:
        if not self.is_s3:
            return self.local_path().is_dir()
        return _s3(self, lambda c, b, k: any(True for _ in c.list_objects(b, prefix=_dir(k))))

    def entries(self) -> list[tuple["Location", bool]]:
        """Immediate children, sorted, each with whether it is a folder (on S3 a common prefix)."""
        if not self.is_s3:
            return [(self / p.name, p.is_dir() and not p.is_symlink()) for p in sorted(self.local_path().iterdir())]
        found = _s3(self, lambda c, b, k: [(o.object_name[len(_dir(k)):].rstrip("/"), o.is_dir)
                                           for o in c.list_objects(b, prefix=_dir(k))])
        return [(self / name, is_dir) for name, is_dir in sorted(found) if name]

    def iterdir(self) -> list["Location"]:
        return [loc for loc, _ in self.entries()]

    def files(self) -> list["Location"]:
        """Every file under this folder, at any depth."""
        if not self.is_s3:
            base = self.local_path()
            return [self / str(p.relative_to(base)) for p in sorted(base.rglob("*")) if p.is_file()] \
                if base.is_dir() else []
        keys = _s3(self, lambda c, b, k: [o.object_name for o in c.list_objects(b, prefix=_dir(k), recursive=True)])
        return [Location(self.root, _unprefixed(self, key)) for key in sorted(keys)]

    def version(self) -> str:
        """Changes whenever the content may have: mtime and size locally, the ETag on S3."""
        if not self.is_s3:
            st = self.local_path().stat()
            return f"{st.st_mtime_ns}-{st.st_size}"
        return _s3(self, lambda c, b, k: c.stat_object(b, k).etag)

    def size(self) -> int:
        if not self.is_s3:
            return self.local_path().stat().st_size
        return _s3(self, lambda c, b, k: c.stat_object(b, k).size)

    # --- writing -----------------------------------------------------------------
    def write_bytes(self, data: bytes) -> None:
        """Write atomically: readers see the old content or the new, never part of it."""
        if not self.is_s3:
            _atomic_local(self.local_path(), data)
            return
        _s3(self, lambda c, b, k: c.put_object(b, k, io.BytesIO(data), len(data), part_size=PART_SIZE))

    def unlink(self) -> None:
        """Remove the file if it is there."""
        if not self.is_s3:
            self.local_path().unlink(missing_ok=True)
            return
        _s3(self, lambda c, b, k: c.remove_object(b, k))

    def rmtree(self) -> None:
        """Remove the folder and everything under it, if it is there."""
        if not self.is_s3:
            shutil.rmtree(self.local_path(), ignore_errors=True)
            return
        for loc in self.files():
            loc.unlink()

    def replace(self, target: "Location") -> None:
        """Move this file to ``target`` (replacing it): a rename, or an S3 server-side copy and delete.
        ``target`` has the full content the moment it exists."""
        if not self.is_s3 and not target.is_s3:
            target.local_path().parent.mkdir(parents=True, exist_ok=True)
            self.local_path().replace(target.local_path())
            return
        if self.is_s3 and target.is_s3 and _bucket(self) == _bucket(target):
            from minio.commonconfig import CopySource

            source = _object_key(self)
            _s3(target, lambda c, b, k: c.copy_object(b, k, CopySource(b, source)))
            self.unlink()
            return
        target.write_bytes(self.read_bytes())
        self.unlink()

    def move_tree(self, target: "Location") -> None:
        """Move a folder's files under ``target`` (which is cleared first)."""
        target.rmtree()
        if not self.is_s3 and not target.is_s3:
            if self.local_path().is_dir():
                target.local_path().parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.local_path()), str(target.local_path()))
            return
        for loc in self.files():
            loc.replace(target / loc.relative_to(self))


def _atomic_local(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary sibling and a rename; the file gets the process's
    umask like any other (mkstemp's 0600 would hide exports from the studio's group)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- S3 (MinIO client) ----------------------------------------------------------------

@dataclass(frozen=True)
class S3Settings:
    endpoint: str
    access_key: str
    secret_key: str
    region: str | None = None

    def __repr__(self) -> str:      # never the keys
        return f"S3Settings(endpoint={self.endpoint!r})"


def s3_settings() -> S3Settings:
    values = {}
    config = os.environ.get("LOUPE_S3_CONFIG")
    if config:
        try:
            values = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise StorageError(f"LOUPE_S3_CONFIG {config}: {exc}") from None
    for key in ("endpoint", "access_key", "secret_key", "region"):
        values[key] = os.environ.get(f"LOUPE_S3_{key.upper()}", values.get(key))
    if not values.get("endpoint"):
        raise StorageError("s3:// needs an endpoint: set LOUPE_S3_ENDPOINT (e.g. http://127.0.0.1:9000) "
                           "or LOUPE_S3_CONFIG")
    return S3Settings(values["endpoint"], values.get("access_key") or "", values.get("secret_key") or "",
                      values.get("region"))


@functools.lru_cache(maxsize=4)
def _client(settings: S3Settings):
    import urllib3
    from minio import Minio

    url = urlparse(settings.endpoint if "://" in settings.endpoint else f"http://{settings.endpoint}")
    # no retries inside urllib3: _s3 retries whole calls with its own back-off and deadline
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=60), retries=False, maxsize=8)
    return Minio(url.netloc, access_key=settings.access_key, secret_key=settings.secret_key,
                 secure=url.scheme == "https", region=settings.region, http_client=http)


def _bucket(loc: Location) -> str:
    return urlparse(loc.root).netloc


def _prefix(loc: Location) -> str:
    return urlparse(loc.root).path.strip("/")


def _object_key(loc: Location) -> str:
    return "/".join(p for p in (_prefix(loc), loc.key) if p)


def _unprefixed(loc: Location, key: str) -> str:
    prefix = _prefix(loc)
    return key[len(prefix) + 1:] if prefix else key


def _dir(key: str) -> str:
    return f"{key}/" if key else ""


def _read_object(client, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _stat(client, bucket: str, key: str):
    from minio.error import S3Error

    try:
        return client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
            return None
        raise


def _s3(loc: Location, call):
    """``call(client, bucket, object_key)``, retried with back-off while the endpoint is unreachable or
    answers 5xx, up to ``LOUPE_S3_RETRY_SECONDS``; then a one-line ``StorageError``."""
    from minio.error import S3Error, ServerError
    from urllib3.exceptions import HTTPError

    settings = s3_settings()
    deadline = time.monotonic() + float(os.environ.get("LOUPE_S3_RETRY_SECONDS", "60"))
    delay = 0.5
    while True:
        try:
            return call(_client(settings), _bucket(loc), _object_key(loc))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject") and loc.key:
                raise FileNotFoundError(f"not found: {loc}") from None
            raise StorageError(f"{settings.endpoint}: {exc.code} on {loc}") from None
        except (ServerError, HTTPError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise StorageError(f"{settings.endpoint} unreachable for {loc}: {type(exc).__name__}") from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
