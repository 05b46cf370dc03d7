"""The review app in a real browser, from the keyboard only.

Debian's chromium (installed by the Makefile's set-up) driven headless by
Playwright, never a browser Playwright downloads. A small simulated shoot goes
through the real flow with a strict preset so every image is flagged; the
reviewer approves one, rejects one with a note and re-runs one with overrides
through the Prefect flow; afterwards the manifest, the exports on disk and the
audit log must say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from infra.catalog import Catalog

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _need_browser():
    """Skip (or fail, where LOUPE_REQUIRE_BROWSER=1, as in CI) without chromium and Playwright."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium; `make venv` installs it where apt-get runs as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (test extra)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("LOUPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory, prefect_server, ray_session):
    """Four images, all in the review queue (a preset whose colour rule nothing can pass)."""
    _need_browser()
    from flows.shoot import run_shoots
    from models.simulator import synth_shoot

    root = tmp_path_factory.mktemp("review-browser")
    shoot = root / "shoots" / "rv-shoot"
    synth_shoot(shoot, images=4, seed=5, size=(480, 320), formats=("jpg",))
    shutil.rmtree(shoot / "truth")
    preset = root / "strict.toml"
    text = Path("infra/presets/catalog.toml").read_text().replace('name = "catalog"', 'name = "strict"')
    text = text.replace('reason = "color_drift"\nmax = 2.5', 'reason = "color_drift"\nmax = -1.0')
    assert "max = -1.0" in text
    preset.write_text(text)
    out = root / "out"
    counts = run_shoots([shoot], out, preset=str(preset))
    assert counts["review"] == 4, counts
    return out, preset


@contextlib.contextmanager
def serving(out: Path, preset: Path):
    """The review app for ``out`` on a free loopback port, in a thread: yields (base URL, app)."""
    import uvicorn

    from infra.reviewapp import create_app

    app = create_app(out / ".state", out, preset=str(preset), who="kbd-reviewer", device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(flagged):
    with serving(*flagged) as served:
        yield served


def test_keyboard_only_review(flagged, server, tmp_path):
    from playwright.sync_api import sync_playwright

    out, _ = flagged
    base, app = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            page.goto(f"{base}/queue")
            ids = page.eval_on_selector_all("tr.item", "rows => rows.map(r => r.dataset.id)")
            assert len(ids) == 4

            page.keyboard.press("Enter")                       # open the first row
            page.wait_for_url(f"**/image/{ids[0]}?*")
            viewer = page.locator("#viewer")
            page.keyboard.press("s")                           # side by side -> swipe
            assert viewer.get_attribute("data-view") == "swipe"
            page.keyboard.press("ArrowLeft")
            assert viewer.evaluate("v => v.style.getPropertyValue('--split')") == "45%"
            page.keyboard.press("o")                           # overlays: cut-out mask first
            assert viewer.get_attribute("data-overlay") == "mask"
            page.wait_for_function("() => document.querySelector('.pane.after .ov').naturalWidth > 0")
            page.keyboard.press("z")
            page.keyboard.press("z")
            page.keyboard.press("z")                           # 100% -> 200% -> 400%
            assert page.locator("#zoom-name").inner_text() == "400%"
            assert page.locator(".pane.after .lens").is_visible()

            page.keyboard.press("a")                           # approve -> next image
            page.wait_for_url(f"**/image/{ids[1]}?*")
            assert ids[0] in page.locator("#msg").inner_text()

            page.keyboard.press("r")                           # reject with a note
            page.keyboard.type("scratched stone")
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/image/{ids[2]}?*")

            page.keyboard.press("e")                           # re-run: dust strength, matting band, skip shine
            page.keyboard.type("0.3")
            page.keyboard.press("Tab")
            page.keyboard.type("3")
            page.keyboard.press("Tab")                         # dust contrast: leave empty
            page.keyboard.press("Tab")                         # first skip box ...
            while page.evaluate("document.activeElement.value") != "shine":
                page.keyboard.press("Tab")
            page.keyboard.press("Space")
            page.keyboard.press("Shift+Tab")                   # Enter from a text field submits the form
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Shift+Tab")
            while page.evaluate("document.activeElement.name") != "cutout.band":
                page.keyboard.press("Shift+Tab")
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/image/{ids[3]}?*")

            deadline = time.time() + 120                       # the re-run goes through Prefect and Ray
            while app.state.jobs[ids[2]].running() or not app.state.jobs[ids[2]].done():
                assert time.time() < deadline, "re-run did not finish"
                time.sleep(0.25)
            assert app.state.jobs[ids[2]].result() == "review"  # the strict preset flags it again

            page.keyboard.press("q")                           # back to the queue: the re-run image is back
            page.wait_for_url("**/queue?*")
            left = page.eval_on_selector_all("tr.item", "rows => rows.map(r => r.dataset.id)")
            assert sorted(left) == sorted([ids[2], ids[3]])
            page.screenshot(path=str(tmp_path / "queue.png"))
        finally:
            browser.close()

    df = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("image_id")
    assert df.loc[ids[0], "status"] == "exported"
    exports = [out / p for p in df.loc[ids[0], "exports"].split(";")]
    assert len(exports) == 5 and all(p.is_file() and p.stat().st_size for p in exports)
    rejected = df.loc[ids[1]]
    assert rejected["status"] == "rejected" and "reviewer_rejected" in rejected["reasons"]
    assert rejected["exports"] == "" and "scratched stone" in rejected["error"]
    assert not list((out / "exports").rglob(f"{rejected['sku']}_{rejected['view']}_*"))
    assert df.loc[ids[2], "status"] == "review" and df.loc[ids[3], "status"] == "review"
    assert (out / "qa" / "rv-shoot" / "reruns" / ids[2] / "metrics.csv").is_file()
    assert (out / "review" / "rv-shoot" / ids[2] / "after.jpg").is_file()

    audit = Catalog.open(out / ".state").audit_rows()[::-1]
    assert [(a["who"], a["action"], a["image_id"]) for a in audit] == [
        ("kbd-reviewer", "approve", ids[0]), ("kbd-reviewer", "reject", ids[1]),
        ("kbd-reviewer", "rerun", ids[2]), ("kbd-reviewer", "rerun_done", ids[2])]
    assert json.loads(audit[2]["details"]) == {"stages": {"dust": {"strength": 0.3}, "cutout": {"band": 3}},
                                               "skip": ["shine"]}


@pytest.fixture(scope="module")
def hundred(flagged, tmp_path_factory):
    """A copy of the flagged run whose queue holds 100 images (clones of one flagged image)."""
    src_out, preset = flagged
    out = tmp_path_factory.mktemp("hundred") / "out"
    shutil.copytree(src_out, out)
    catalog = Catalog.open(out / ".state")
    row = next(r for r in catalog.rows() if r["status"] == "review")
    shoot, staged = row["shoot"], json.loads(row["staged"])
    for r in catalog.queue("open"):                    # start from an empty queue
        catalog.set_status(r["shoot"], r["source"], status="rejected", staged={})
    from sqlalchemy import delete

    from infra.catalog import review_queue
    with catalog.engine.begin() as c:
        c.execute(delete(review_queue))
    for i in range(100):
        image_id, sku = f"{i + 1:016x}", f"K{i:03d}"
        stage = out / ".staging" / shoot / image_id
        stage.mkdir(parents=True)
        copies = {}
        for name, path in staged.items():
            target = stage / Path(path).name
            shutil.copy(out / Path(path).relative_to(src_out), target)
            copies[name] = str(target)
        shutil.copytree(out / "review" / shoot / row["image_id"], out / "review" / shoot / image_id)
        catalog.upsert(**{**row, "source": f"{sku}_front.jpg", "image_id": image_id, "sku": sku,
                          "staged": copies, "metrics": json.loads(row["metrics"])})
        catalog.enqueue(image_id, shoot, f"{sku}_front.jpg", row["reasons"].split(";"))
    return out, preset


def test_a_hundred_images_cleared_from_the_keyboard(hundred):
    """The issue's target: a reviewer clears 100 flagged images without touching the mouse."""
    from playwright.sync_api import sync_playwright

    out, preset = hundred
    with serving(out, preset) as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{base}/queue")
        assert page.locator("tr.item").count() == 100
        page.keyboard.press("Enter")
        t0 = time.perf_counter()
        for _ in range(100):
            current = page.url
            page.keyboard.press("a")                        # approve; the next image opens
            page.wait_for_function("u => location.href !== u", arg=current)
        seconds = time.perf_counter() - t0
        browser.close()
    catalog = Catalog.open(out / ".state")
    assert catalog.queue("open") == []
    df = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    cleared = df[df["sku"].str.startswith("K")]
    assert len(cleared) == 100 and (cleared["status"] == "exported").all()
    assert all((out / p).is_file() for p in ";".join(cleared["exports"]).split(";"))
    print(f"100 images approved from the keyboard in {seconds:.1f} s")
