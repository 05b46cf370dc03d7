"""infra.storage: the same file operations on a folder and on S3 (moto's server, the real minio client)."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from infra.storage import PART_SIZE, Location, StorageError


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return Location.of(tmp_path / "root")
    request.getfixturevalue("s3")
    return Location.of(f"s3://loupe/unit-{time.monotonic_ns()}")


def test_write_read_list_move_delete(root):
    (root / "a" / "x.txt").write_bytes(b"one")
    (root / "a" / "y.txt").write_bytes(b"two")
    (root / "a" / "sub" / "z.txt").write_bytes(b"three")
    (root / "b.txt").write_bytes(b"four")
    assert (root / "a" / "x.txt").read_bytes() == b"one"
    assert [(loc.name, is_dir) for loc, is_dir in root.entries()] == [("a", True), ("b.txt", False)]
    assert [loc.relative_to(root) for loc in (root / "a").files()] == ["a/sub/z.txt", "a/x.txt", "a/y.txt"]
    (root / "a" / "x.txt").replace(root / "c" / "x.txt")
    assert not (root / "a" / "x.txt").exists() and (root / "c" / "x.txt").read_bytes() == b"one"
    (root / "a").move_tree(root / "d")
    assert not (root / "a").is_dir() and (root / "d" / "sub" / "z.txt").read_bytes() == b"three"
    (root / "d").rmtree()
    assert not (root / "d").exists()
    with (root / "b.txt").local_file() as path:
        assert path.read_bytes() == b"four" and path.name == "b.txt"
    with pytest.raises(FileNotFoundError):
        (root / "missing.txt").read_bytes()
    (root / "missing.txt").unlink()          # no error: removing what is not there


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(root):
    data = os.urandom(PART_SIZE + 12345)
    (root / "master.tif").write_bytes(data)
    assert (root / "master.tif").read_bytes() == data and (root / "master.tif").size() == len(data)


def test_local_files_get_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        (Location.of(tmp_path) / "e.jpg").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "e.jpg").stat().st_mode) == 0o644


def test_a_short_outage_is_ridden_out_a_long_one_is_one_line_without_the_keys(s3, monkeypatch):
    loc = Location.of("s3://loupe/outage") / "f.bin"
    s3.stop()
    threading.Timer(3.0, s3.start).start()
    loc.write_bytes(b"written during the outage")          # retried until the endpoint is back
    assert loc.read_bytes() == b"written during the outage"
    monkeypatch.setenv("LOUPE_S3_RETRY_SECONDS", "1")
    s3.stop()
    try:
        with pytest.raises(StorageError) as err:
            loc.read_bytes()
    finally:
        s3.start()
    message = str(err.value)
    assert s3.endpoint in message and "unreachable" in message and "\n" not in message
    assert "test-secret-key" not in message and "test-access-key" not in message
    assert isinstance(err.value, OSError)                   # the flow's transient class


def test_no_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LOUPE_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("LOUPE_S3_CONFIG", raising=False)
    with pytest.raises(StorageError, match="LOUPE_S3_ENDPOINT"):
        Location.of("s3://loupe/x").read_bytes()
