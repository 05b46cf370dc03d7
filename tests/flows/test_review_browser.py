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
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import served
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
    from infra.reviewapp import create_app

    app = create_app(out / ".state", out, preset=str(preset), who="kbd-reviewer", device="cpu")
    with served(app) as port:
        yield f"http://127.0.0.1:{port}", app


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
            shutil.copy(out / path, target)              # staged paths are relative to OUT
            copies[name] = str(target.relative_to(out))
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
        page.wait_for_url("**/image/**")
        page.wait_for_load_state("load")
        t0 = time.perf_counter()
        for _ in range(100):
            current = page.url
            page.keyboard.press("a")                        # approve; the next image opens
            page.wait_for_function("u => location.href !== u", arg=current)
            page.wait_for_load_state("load")                # a key pressed before it lands on the old page
        seconds = time.perf_counter() - t0
        browser.close()
    catalog = Catalog.open(out / ".state")
    assert catalog.queue("open") == []
    df = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    cleared = df[df["sku"].str.startswith("K")]
    assert len(cleared) == 100 and (cleared["status"] == "exported").all()
    assert all((out / p).is_file() for p in ";".join(cleared["exports"]).split(";"))
    print(f"100 images approved from the keyboard in {seconds:.1f} s")


CUT = (2400, 1600)                 # the fixture's cut-out: four zoom levels (2400, 1200, 600, 300 px wide)
EVIDENCE = [
    {"code": "hole_not_backdrop", "text": "a hole in the piece does not look like the backdrop seen through it",
     "box": [1100, 700, 1300, 900]},
    {"code": "white_fringe", "text": "a white fringe along the outer edge", "box": [1780, 700, 1810, 900]},
    {"code": "shadow_slab", "text": "a shadow slab left under the piece", "box": [600, 1420, 1800, 1560]},
]


def _cutout_rgba():
    """A ring on nothing: gold band with a white-filled patch in its hole, a white fringe, a shadow slab."""
    import numpy as np

    y, x = np.mgrid[:CUT[1], :CUT[0]]
    r = np.hypot(x - 1200, y - 800)
    rgba = np.zeros((CUT[1], CUT[0], 4), np.uint8)
    rgba[(r >= 380) & (r < 600)] = (212, 175, 55, 255)
    rgba[(r >= 600) & (r < 604)] = (255, 255, 255, 255)           # white fringe
    rgba[(np.abs(x - 1200) < 80) & (np.abs(y - 800) < 80)] = (250, 250, 250, 255)   # the hole filled white
    slab = (y >= 1440) & (y < 1540) & (x >= 620) & (x < 1780) & (rgba[..., 3] == 0)
    rgba[slab] = (30, 30, 30, 90)                                  # a half-transparent shadow slab
    return rgba


@pytest.fixture(scope="module")
def evidenced(flagged, tmp_path_factory):
    """A copy of the flagged run where one queued image has a staged 2400 x 1600 RGBA cut-out and QA's
    evidence.json (three located findings) and evidence.png next to its previews. Yields (out, preset, image_id)."""
    from PIL import Image, ImageDraw

    src_out, preset = flagged
    out = tmp_path_factory.mktemp("evidence") / "out"
    shutil.copytree(src_out, out)
    catalog = Catalog.open(out / ".state")
    row = next(r for r in catalog.rows() if r["status"] == "review" and
               any(q["image_id"] == r["image_id"] for q in catalog.queue("open")))
    staged = {k: str(out / v) for k, v in json.loads(row["staged"]).items()}
    assert "cutout" in staged, staged                  # the preset stages one; the fixture's replaces it
    path = Path(staged["cutout"]).with_name("cutout-fixture.png")
    Image.fromarray(_cutout_rgba(), "RGBA").save(path)
    catalog.set_status(row["shoot"], row["source"], staged={**staged, "cutout": str(path)})
    review = out / "review" / row["shoot"] / row["image_id"]
    (review / "evidence.json").write_text(json.dumps({"size": list(CUT), "findings": EVIDENCE}))
    size = Image.open(review / "after.jpg").size
    mark = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    for f in EVIDENCE:
        x0, y0, x1, y1 = f["box"]
        draw.rectangle([x0 * size[0] / CUT[0], y0 * size[1] / CUT[1], x1 * size[0] / CUT[0], y1 * size[1] / CUT[1]],
                       fill=(255, 0, 255, 150))
    mark.save(review / "evidence.png")
    return out, preset, row["image_id"]


def test_backdrops_full_resolution_tiles_findings_and_overlay_none(evidenced, tmp_path):
    """What QA cannot see: the cut-out over white, checkerboard and a contrasting colour, zoomed from
    full-resolution tiles onto QA's findings by key; and overlay "none" really draws nothing."""
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    out, preset, image_id = evidenced
    with serving(out, preset) as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            page.goto(f"{base}/image/{image_id}")
            deep = page.locator("#deep")
            state = lambda: deep.evaluate("d => ({...d.dataset})")     # noqa: E731
            page.wait_for_function("() => document.querySelector('#deep').dataset.loaded === '1'")
            assert page.locator("li.finding").count() == 3
            assert "does not look like the backdrop seen through it" in page.locator("#finding-1").inner_text()
            assert page.locator("#deep .box").count() == 3

            def pixel(sx, sy):
                """The screen colour over source pixel (sx, sy) of the cut-out."""
                s = state()
                box = deep.bounding_box()
                x = box["x"] + box["width"] / 2 + (sx - float(s["cx"])) * float(s["scale"])
                y = box["y"] + box["height"] / 2 + (sy - float(s["cy"])) * float(s["scale"])
                shot = page.screenshot(clip={"x": round(x) - 1, "y": round(y) - 1, "width": 3, "height": 3})
                return Image.open(io.BytesIO(shot)).convert("RGB").getpixel((1, 1))

            page.locator("#deep").scroll_into_view_if_needed()
            plate = "() => getComputedStyle(document.querySelector('#deep .plate'))"
            assert state()["backdrop"] == "white" and state()["level"] in ("1", "2")   # fit: reduced tiles
            assert page.evaluate(f"({plate})().backgroundColor") == "rgb(255, 255, 255)"
            corner, hole = (60, 60), (1200, 520)           # transparent: outside the ring and inside its hole
            assert pixel(*corner) == pixel(*hole) == (255, 255, 255)
            page.screenshot(path=str(tmp_path / "backdrop-white.png"))
            page.keyboard.press("g")                       # checkerboard
            assert state()["backdrop"] == "checker"
            assert "conic-gradient" in page.evaluate(f"({plate})().backgroundImage")
            page.screenshot(path=str(tmp_path / "backdrop-checker.png"))
            for _ in range(3):                             # grey, black, magenta
                page.keyboard.press("g")
            assert state()["backdrop"] == "magenta"
            assert page.evaluate(f"({plate})().backgroundColor") == "rgb(255, 0, 255)"
            assert pixel(*corner) == pixel(*hole) == (255, 0, 255)
            assert pixel(1200, 800) != (255, 0, 255)       # the white-filled hole does not show the backdrop
            page.screenshot(path=str(tmp_path / "backdrop-magenta.png"))

            fit = float(state()["scale"])
            page.keyboard.press("1")                       # jump to finding 1: centred on its box, zoomed in
            s = state()
            assert s["finding"] == "1" and abs(float(s["cx"]) - 1200) < 1 and abs(float(s["cy"]) - 800) < 1
            assert float(s["scale"]) > 4 * fit and s["level"] == "0"
            assert page.evaluate("document.activeElement.id") == "deep"
            page.wait_for_function("() => document.querySelector('#deep').dataset.loaded === '1'")
            tiles = page.eval_on_selector_all("#deep .tiles img:not(.base)", "ts => ts.map(t => t.src)")
            assert tiles and all("/tile/0/" in t for t in tiles)   # level 0: full resolution
            box = page.locator("#deep .box.active").bounding_box()
            view = deep.bounding_box()
            assert view["x"] < box["x"] and box["x"] + box["width"] < view["x"] + view["width"]
            assert pixel(1105, 705) == (255, 0, 255)      # full resolution, still over the chosen backdrop
            page.screenshot(path=str(tmp_path / "finding-1.png"))
            page.keyboard.press("3")
            s = state()
            assert s["finding"] == "3" and abs(float(s["cx"]) - 1200) < 1 and abs(float(s["cy"]) - 1490) < 1
            page.keyboard.press("ArrowRight")              # the viewer has the focus: arrows pan it
            assert float(state()["cx"]) > 1200
            page.keyboard.press("0")                       # fit again; +/- and the wheel zoom, a drag pans
            assert abs(float(state()["scale"]) - fit) < 1e-3
            page.keyboard.press("+")
            assert abs(float(state()["scale"]) - 1.5 * fit) < 1e-3
            page.mouse.move(view["x"] + view["width"] / 2, view["y"] + view["height"] / 2)
            page.mouse.wheel(0, -300)
            page.wait_for_function(f"() => +document.querySelector('#deep').dataset.scale > {1.6 * fit}")
            cx = float(state()["cx"])
            page.mouse.down()
            page.mouse.move(view["x"] + view["width"] / 2 - 100, view["y"] + view["height"] / 2, steps=4)
            page.mouse.up()
            assert float(state()["cx"]) > cx + 20

            viewer, ov = page.locator("#viewer"), page.locator(".pane.after .ov")
            clean = page.locator(".pane.after").screenshot()
            seen = []
            for _ in range(5):                             # mask, defects, detail, evidence, none
                page.keyboard.press("o")
                kind = viewer.get_attribute("data-overlay")
                seen.append(kind)
                if kind != "none":
                    page.wait_for_function("() => document.querySelector('.pane.after .ov').naturalWidth > 0")
                    assert ov.is_visible()
            assert seen == ["mask", "defects", "detail", "evidence", "none"]
            assert not ov.is_visible() and ov.get_attribute("src") is None
            assert page.evaluate("getComputedStyle(document.querySelector('.pane.after .ov')).display") == "none"
            assert page.locator(".pane.after").screenshot() == clean      # nothing drawn over the after image
            page.keyboard.press("?")
            assert "backdrop" in page.locator("#help").inner_text()
            page.screenshot(path=str(tmp_path / "help.png"), full_page=True)
        finally:
            browser.close()
