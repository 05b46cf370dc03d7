"""The catalog and review queue: one database file under the state dir.

SQLite by default, any SQLAlchemy URL for a shared database. One row per
source file (shoot + file name), carrying its content hash, the preset
digest it was processed with, its status and reasons, metrics and exports.
The review queue is a second table a reviewer works through.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, create_engine, delete, inspect, select, text, update)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from infra.errors import OperatorError

# pending: to be processed (or in flight); retryable: a transient fault (worker crash, out of memory,
# storage outage) outlasted this run's retries, so the next run takes it again
STATUSES = ("pending", "exported", "review", "rejected", "retryable")
TERMINAL = ("exported", "review", "rejected")
LOCK_STALE_S = 1800      # a lock whose holder has not beaten for this long (another host) is taken over

metadata = MetaData()
images = Table(
    "images", metadata,
    Column("shoot", String, primary_key=True),
    Column("source", String, primary_key=True),      # file name inside the shoot folder
    Column("path", Text, nullable=False),
    Column("image_id", String, nullable=False, index=True),
    Column("sha256", String, nullable=False),
    Column("sku", String, nullable=False),
    Column("view", String, nullable=False),
    Column("preset", String, nullable=False),
    Column("preset_digest", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reasons", Text, nullable=False, default=""),
    Column("error", Text, nullable=False, default=""),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("notes", Text, nullable=False, default=""),
    Column("exports", Text, nullable=False, default="{}"),
    Column("staged", Text, nullable=False, default="{}"),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False),
    Column("node", String, default=""),               # the Ray node that made it (added later: nullable)
    Column("timings", Text, default="{}"),            # seconds per step of its last processing (JSON)
)
review_queue = Table(
    "review_queue", metadata,
    Column("image_id", String, primary_key=True),
    Column("shoot", String, nullable=False, index=True),
    Column("source", String, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("state", String, nullable=False),          # open | approved | rejected
    Column("note", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("decided_at", Float),
    Column("decided_by", String),
)
run_lock = Table(                                     # one run at a time per catalog (see Catalog.lock)
    "run_lock", metadata,
    Column("name", String, primary_key=True),
    Column("host", String, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Column("beat", Float, nullable=False),
)
audit_log = Table(                                    # every reviewer action: who, when, what
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("who", String, nullable=False),
    Column("action", String, nullable=False),          # approve | reject | rerun | rerun_done | rerun_failed | login
    Column("image_id", String, nullable=False, default="", index=True),
    Column("details", Text, nullable=False, default="{}"),   # JSON
)


def _encoded(values: dict) -> dict:
    """Stamp the row and store dict-valued columns as JSON text."""
    out = {**values, "updated_at": time.time()}
    for key in ("metrics", "exports", "staged", "timings"):
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], sort_keys=True)
    return out


@dataclass
class Catalog:
    engine: Engine

    @classmethod
    def open(cls, state: Path | str) -> "Catalog":
        """Open (creating if needed) the catalog in a state dir or at a SQLAlchemy URL."""
        url = str(state)
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(url).resolve() / 'catalog.sqlite'}"
        engine = create_engine(url, future=True)
        _create_schema(engine)
        return cls(engine)

    def get(self, shoot: str, source: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(select(images).where(images.c.shoot == shoot, images.c.source == source)).mappings().first()
        return dict(row) if row else None

    def by_image_id(self, image_id: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(select(images).where(images.c.image_id == image_id)).mappings().first()
        return dict(row) if row else None

    def upsert(self, **row) -> None:
        self.upsert_many([row])

    def upsert_many(self, rows: list[dict], dequeue: list[str] = ()) -> None:
        """Insert or replace ``rows`` and drop the open queue entries of the images ``dequeue`` in one
        transaction: a 1,000-file shoot's ingest 2.3 -> 0.2 s (a commit each, 2,000 of them, before)."""
        dequeue, rows = list(dequeue), [_encoded(r) for r in rows]
        with self.engine.begin() as c:
            for k in range(0, len(dequeue), 500):     # (under SQLite's 999 bound variables a statement)
                c.execute(review_queue.delete().where(review_queue.c.image_id.in_(dequeue[k:k + 500]),
                                                      review_queue.c.state == "open"))
            if self.engine.dialect.name == "sqlite":
                # one statement for rows of the same columns, run for each (compiled once, not per row)
                for keys in dict.fromkeys(tuple(sorted(r)) for r in rows):
                    stmt = sqlite_insert(images)
                    stmt = stmt.on_conflict_do_update(index_elements=["shoot", "source"],
                                                      set_={k: stmt.excluded[k] for k in keys})
                    c.execute(stmt, [r for r in rows if tuple(sorted(r)) == keys])
                return
            for row in rows:    # portable path for other databases
                done = c.execute(update(images).where(images.c.shoot == row["shoot"], images.c.source == row["source"]).values(**row))
                if done.rowcount == 0:
                    c.execute(images.insert().values(**row))

    def set_status(self, shoot: str, source: str, **values) -> None:
        values = _encoded(values)
        with self.engine.begin() as c:
            c.execute(update(images).where(images.c.shoot == shoot, images.c.source == source).values(**values))

    def rows(self, shoot: str | None = None) -> list[dict]:
        q = select(images).order_by(images.c.shoot, images.c.source)
        if shoot:
            q = q.where(images.c.shoot == shoot)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    # --- review queue ---------------------------------------------------
    def enqueue(self, image_id: str, shoot: str, source: str, reasons: list[str]) -> None:
        """Open (or re-open) an image's queue entry."""
        with self.engine.begin() as c:
            _open_entry(c, image_id, shoot, source, reasons)

    def hold_for_review(self, shoot: str, source: str, image_id: str, reasons: list[str], **values) -> None:
        """Mark the image ``review`` and open its queue entry, in one transaction."""
        with self.engine.begin() as c:
            c.execute(update(images).where(images.c.shoot == shoot, images.c.source == source).values(
                **_encoded({**values, "status": "review", "reasons": ";".join(reasons)})))
            _open_entry(c, image_id, shoot, source, reasons)

    def queue(self, state: str | None = "open") -> list[dict]:
        q = select(review_queue).order_by(review_queue.c.created_at)
        if state:
            q = q.where(review_queue.c.state == state)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    # --- one run at a time ------------------------------------------------
    def lock(self, name: str = "run") -> "RunLock":
        """Take the catalog's run lock, or raise ``Busy`` naming who holds it.

        A holder on this host whose process is gone, or one on another host that has not beaten
        for ``LOCK_STALE_S``, is taken over: a killed run never blocks the next one.
        """
        me = dict(name=name, host=socket.gethostname(), pid=os.getpid(), since=time.time(), beat=time.time())
        with self.engine.begin() as c:
            held = c.execute(select(run_lock).where(run_lock.c.name == name)).mappings().first()
            if held and (held["host"], held["pid"]) == (me["host"], me["pid"]):
                return RunLock(self, name, me["host"], me["pid"], owner=False)   # this process has it already
            if held and not _stale(dict(held)):
                raise Busy(f"another run (pid {held['pid']} on {held['host']}, started "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(held['since']))}) is using this "
                           "catalog; wait for it to finish, or give this run its own --out/--state")
            if held:
                c.execute(delete(run_lock).where(run_lock.c.name == name, run_lock.c.pid == held["pid"],
                                                 run_lock.c.host == held["host"]))
            try:
                c.execute(run_lock.insert().values(**me))
            except IntegrityError:   # another run took it between our read and write
                raise Busy("another run took this catalog's lock just now; wait for it to finish") from None
        return RunLock(self, name, me["host"], me["pid"])

    # --- audit log --------------------------------------------------------
    def audit(self, who: str, action: str, image_id: str = "", details: dict | None = None) -> None:
        """Record one reviewer action (who, when, what)."""
        with self.engine.begin() as c:
            c.execute(audit_log.insert().values(at=time.time(), who=who, action=action, image_id=image_id,
                                                details=json.dumps(details or {}, sort_keys=True)))

    def audit_rows(self, image_id: str | None = None, limit: int = 500) -> list[dict]:
        """Newest first."""
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if image_id:
            q = q.where(audit_log.c.image_id == image_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]


def _create_schema(engine: Engine, tries: int = 5) -> None:
    """The tables, and the columns added since. Another process (a run, the review app, a re-run)
    may be opening the same new catalog at this moment: a table or column it made between our
    check and our create is not an error; we look again."""
    for attempt in range(tries):
        try:
            metadata.create_all(engine)
            _add_new_columns(engine)
            return
        except OperationalError as exc:
            message = str(exc).lower()
            if attempt == tries - 1 or not ("already exists" in message or "duplicate column" in message):
                raise
            time.sleep(0.05 * (attempt + 1))


def _add_new_columns(engine: Engine) -> None:
    """A catalog made by an older Loupe gets the columns added since (nullable, so no rewrite)."""
    with engine.begin() as c:
        for table in (images, review_queue, audit_log):
            have = {col["name"] for col in inspect(c).get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    c.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _open_entry(c, image_id: str, shoot: str, source: str, reasons: list[str]) -> None:
    c.execute(review_queue.delete().where(review_queue.c.image_id == image_id))
    c.execute(review_queue.insert().values(image_id=image_id, shoot=shoot, source=source, reasons=";".join(reasons),
                                           state="open", note="", created_at=time.time(), decided_at=None,
                                           decided_by=None))


class Busy(OperatorError):
    """Another run holds the catalog's lock."""


def process_alive(pid: int) -> bool:
    """A process with this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def _stale(held: dict) -> bool:
    if held["host"] == socket.gethostname():
        return not process_alive(held["pid"])
    return time.time() - held["beat"] > LOCK_STALE_S


@dataclass
class RunLock:
    catalog: Catalog
    name: str
    host: str
    pid: int
    owner: bool = True     # False: taken again by the process that holds it; release is the first taker's

    def _mine(self):
        return (run_lock.c.name == self.name) & (run_lock.c.host == self.host) & (run_lock.c.pid == self.pid)

    def beat(self) -> None:
        with self.catalog.engine.begin() as c:
            c.execute(update(run_lock).where(self._mine()).values(beat=time.time()))

    def release(self) -> None:
        if not self.owner:
            return
        with self.catalog.engine.begin() as c:
            c.execute(delete(run_lock).where(self._mine()))

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
