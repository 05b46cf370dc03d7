"""The catalog: one run at a time, a killed holder never blocks the next, older databases still open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from infra.catalog import Busy, Catalog, run_lock


def test_a_held_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
    catalog = Catalog.open(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", f"from infra.catalog import Catalog; import time; "
                               f"Catalog.open({str(tmp_path)!r}).lock(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=rf"pid {holder.pid} on .* is using this catalog"):
            catalog.lock()
    finally:
        holder.kill()
        holder.wait()
    with catalog.lock():            # the holder was killed: its lock is stale on this host and taken over
        again = catalog.lock()      # the same process taking it again is not refused, and does not release it
        again.release()
        with catalog.engine.connect() as c:
            assert len(c.execute(run_lock.select()).fetchall()) == 1
    with catalog.engine.connect() as c:
        assert c.execute(run_lock.select()).fetchall() == []


def test_a_catalog_from_an_older_loupe_gains_the_new_columns(tmp_path):
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    con.execute("create table images (shoot varchar, source varchar, path text, image_id varchar, sha256 varchar, "
                "sku varchar, view varchar, preset varchar, preset_digest varchar, status varchar, reasons text, "
                "error text, metrics text, notes text, exports text, staged text, seconds float, updated_at float, "
                "primary key (shoot, source))")
    con.execute("insert into images values ('s', 'a.jpg', 'p', 'id', 'h', 'A', 'main', 'catalog', 'd', 'exported', "
                "'', '', '{}', '', '{}', '{}', 1.0, 0.0)")
    con.commit()
    con.close()
    catalog = Catalog.open(tmp_path)
    row = catalog.get("s", "a.jpg")
    assert row["status"] == "exported" and "node" in row
    catalog.set_status("s", "a.jpg", node="abc")
    assert catalog.get("s", "a.jpg")["node"] == "abc"


def test_two_processes_opening_a_new_catalog_at_once_both_get_it(tmp_path, monkeypatch):
    """Each checks which tables exist, then creates the missing ones: the other may have created one
    in between (seen when a watcher opened the catalog `loupe run` was creating)."""
    import infra.catalog as cat
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    real, calls = cat.metadata.create_all, []

    def the_other_process_wins(engine, *args, **kwargs):
        calls.append(engine)
        if len(calls) == 1:           # everything is created between our check and our create
            real(engine)
            with engine.begin() as c:
                c.execute(text("create table review_queue (image_id varchar)"))   # sqlite: "already exists"
        return real(engine, *args, **kwargs)

    monkeypatch.setattr(cat.metadata, "create_all", the_other_process_wins)
    catalog = Catalog.open(tmp_path)
    assert len(calls) == 2
    assert catalog.rows() == [] and catalog.queue() == [] and catalog.audit_rows() == []
    with catalog.lock():
        pass

    def broken(engine, *args, **kwargs):
        calls.append(engine)
        raise OperationalError("create table", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(cat.metadata, "create_all", broken)
    with pytest.raises(OperationalError, match="disk I/O"):           # anything else is not retried
        Catalog.open(tmp_path / "other")
    assert len(calls) == 3


def test_upsert_many_inserts_replaces_and_dequeues_in_one_go(tmp_path):
    catalog = Catalog.open(tmp_path)
    def row(source, **values):
        return dict(shoot="s", source=source, path=f"/shoot/{source}", image_id=f"id-{source}", sha256="0" * 64,
                    sku="S1", view="front", preset="catalog", preset_digest="d", status="pending", **values)

    catalog.upsert(**row("a.jpg", metrics={"x": 1}))
    for image_id in ("id-a.jpg", "id-b.jpg"):
        catalog.enqueue(image_id, "s", image_id[3:], ["mask_suspect"])
    # rows of two column sets, one already there; a's queue entry dropped, b's kept
    catalog.upsert_many([row("a.jpg", metrics={"x": 2}), row("b.jpg"), row("c.jpg", reasons="why")],
                        dequeue=["id-a.jpg"])
    got = {r["source"]: r for r in catalog.rows("s")}
    assert sorted(got) == ["a.jpg", "b.jpg", "c.jpg"] and got["a.jpg"]["metrics"] == '{"x": 2}'
    assert got["c.jpg"]["reasons"] == "why" and got["b.jpg"]["reasons"] == ""   # (its default)
    assert [q["image_id"] for q in catalog.queue()] == ["id-b.jpg"]
    # a failing row rolls the whole call back: nothing of it is written
    with pytest.raises(Exception):
        catalog.upsert_many([row("d.jpg"), dict(shoot="s", source="e.jpg", no_such_column=1)], dequeue=["id-b.jpg"])
    assert sorted(r["source"] for r in catalog.rows("s")) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [q["image_id"] for q in catalog.queue()] == ["id-b.jpg"]
