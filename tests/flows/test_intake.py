"""The intake: a shoot's files recorded in folder order as their identities become known, so a big
shoot's first images start before the rest is read (no Ray or Prefect needed)."""

from __future__ import annotations

import hashlib

from flows.shoot import Intake, plan_shoots
from infra.catalog import Catalog
from infra.layout import Layout
from infra.shoots import Identities, list_shoot
from infra.storage import Location


def _shoot(folder, count: int):
    folder.mkdir()
    contents = {f"R{k:03d}_top.jpg": bytes([k]) * (5000 + k) for k in range(count)}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


def test_identities_come_in_folder_order_read_a_few_ahead_and_a_vanished_file_is_refused(tmp_path):
    contents = _shoot(tmp_path / "s", 6)
    listed = list_shoot(tmp_path / "s")
    assert all(src.sha256 == "" for src in listed.sources)       # listing reads no file
    with Identities(listed.sources, ahead=2) as identities:
        got = identities.ready(wait=5)
        assert 1 <= len(got) <= 2                                # no more than `ahead` at a time,
        (tmp_path / "s" / "R005_top.jpg").unlink()               # and as many queued: the last file never read
        while not identities.done:
            got += identities.ready(wait=5)
    assert [s.path.name for s in got] == sorted(contents)
    for src in got[:5]:
        assert src.sha256 == hashlib.sha256(contents[src.path.name]).hexdigest() and not src.refused
    assert got[5].refused.startswith("unreadable: R005_top.jpg")  # one clear line, and the run goes on


def test_the_intake_records_files_as_it_reaches_them_and_names_duplicates_across_batches(tmp_path):
    contents = _shoot(tmp_path / "s", 5)
    (tmp_path / "s" / "R009_top.jpg").write_bytes(contents["R000_top.jpg"])     # the first file again, last
    plan = plan_shoots([tmp_path / "s"], "catalog")[0]
    catalog = Catalog.open(tmp_path / "state")
    layout = Layout(Location.of(tmp_path / "out"))
    with Intake(plan, catalog, layout, ahead=1) as intake:
        first = intake.first()
        assert [j.source.path.name for j in first] == ["R000_top.jpg"]
        assert [r["source"] for r in catalog.rows()] == ["R000_top.jpg"]          # the rest not reached yet
        assert intake.unrecorded == 5 and not intake.done
        jobs = list(first)
        while not intake.done:
            jobs += intake.take(wait=5)
    assert [j.source.path.name for j in jobs] == sorted(contents)
    rows = {r["source"]: r for r in catalog.rows()}
    assert {k: r["status"] for k, r in rows.items()} == {**{k: "pending" for k in contents}, "R009_top.jpg": "rejected"}
    assert rows["R009_top.jpg"]["reasons"] == "duplicate" and "R000_top.jpg" in rows["R009_top.jpg"]["error"]
    assert intake.actions == {"process": 5, "reject": 1} and intake.unrecorded == 0

    for name in contents:          # finished: the next run's intake skips them all and hands out no job
        catalog.set_status(shoot="s", source=name, status="exported")
    with Intake(plan, catalog, layout) as again:
        assert again.first() == [] and again.done and again.actions == {"skip": 5, "reject": 1}
