"""The review web app without a browser: CSRF, login token, image URLs, actions, audit log."""

from __future__ import annotations

import io
import json
import re
import socket
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import served
from infra.catalog import Catalog
from infra.reviewapp import app as appmod
from infra.reviewapp import create_app, is_loopback

IDS = ("a1b2c3d4e5f60718", "0f1e2d3c4b5a6978", "1234567890abcdef")
BASE = "http://127.0.0.1:8765"       # what a reviewer's browser sends as Host by default


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture()
def queue(tmp_path) -> tuple[Path, Path]:
    """Three flagged images with staged exports and previews, as the shoot flow leaves them."""
    out, state = tmp_path / "out", tmp_path / "out" / ".state"
    catalog = Catalog.open(state)
    for n, (image_id, reasons) in enumerate(zip(IDS, ("color_drift", "detail_loss", "color_drift;clipped"))):
        shoot = "shoot-a" if n < 2 else "shoot-b"
        staging = out / ".staging" / shoot / image_id
        staging.mkdir(parents=True)
        (staging / "main.jpg").write_bytes(_jpeg("white"))
        (staging / "thumb.jpg").write_bytes(_jpeg("white"))
        review = out / "review" / shoot / image_id
        review.mkdir(parents=True)
        (review / "before.jpg").write_bytes(_jpeg("grey"))
        (review / "after.jpg").write_bytes(_jpeg("white"))
        planes = np.zeros((48, 64, 3), np.uint8)
        planes[10:30, 10:40] = (255, 128, 255)
        Image.fromarray(planes).save(review / "overlay.png")
        catalog.upsert(shoot=shoot, source=f"R{n}_main.jpg", path=str(tmp_path / shoot / f"R{n}_main.jpg"),
                       image_id=image_id, sha256=image_id * 4, sku=f"R{n}", view="main", preset="catalog",
                       preset_digest="x", status="review", reasons=reasons, error="",
                       metrics={"delta_e_mean": 3.1, "detail_retention": 0.8}, exports={}, notes="cutout: sweep",
                       staged={"main": str(staging / "main.jpg"), "thumb": str(staging / "thumb.jpg")})
        catalog.enqueue(image_id, shoot, f"R{n}_main.jpg", reasons.split(";"))
    return out, state


CUT = (1300, 700)      # a cut-out of three zoom levels: 1300 x 700, 650 x 350, 325 x 175
FINDINGS = [
    {"code": "hole_not_backdrop", "text": "a hole in the piece does not look like the backdrop seen through it",
     "box": [100, 50, 400, 250]},
    {"code": "white_fringe", "text": "a <b>white</b> fringe along the shank", "box": [1200, 600, 1400, 900]},
    {"code": "no_box", "text": "somewhere"},
]


def _cutout() -> np.ndarray:
    """RGBA, source grid: transparent around an opaque gold block with a hole and a half-transparent shadow."""
    rgba = np.zeros((CUT[1], CUT[0], 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)                         # colour under alpha 0 must not bleed into a smaller level
    rgba[100:600, 202:1100] = (210, 170, 60, 255)
    rgba[250:450, 500:800, 3] = 0                       # a hole
    rgba[600:650, 202:1100] = (0, 0, 0, 96)             # a shadow slab
    rgba[:, 1290:] = (255, 255, 255, 255)               # a column at the right edge, in the last tile
    return rgba


@pytest.fixture()
def cutout_queue(queue) -> tuple[Path, Path]:
    """``queue`` with a staged full-resolution cut-out for IDS[0] and QA's evidence.json / evidence.png."""
    out, state = queue
    catalog = Catalog.open(state)
    row = catalog.by_image_id(IDS[0])
    staging = out / ".staging" / row["shoot"] / IDS[0]
    Image.fromarray(_cutout(), "RGBA").save(staging / "cutout.png")
    catalog.set_status(row["shoot"], row["source"], staged={**json.loads(row["staged"]),
                                                            "cutout": str(staging / "cutout.png")})
    review = out / "review" / row["shoot"] / IDS[0]
    (review / "evidence.json").write_text(json.dumps({"size": list(CUT), "findings": FINDINGS}))
    Image.new("RGBA", (64, 48), (255, 0, 255, 160)).save(review / "evidence.png")
    return out, state


def _tile(client: TestClient, image_id: str, level, tx, ty) -> np.ndarray:
    r = client.get(f"/img/{image_id}/tile/{level}/{tx}/{ty}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", (level, tx, ty, r.status_code)
    im = Image.open(io.BytesIO(r.content))
    assert im.mode == "RGBA"
    return np.asarray(im)


def _client(out: Path, state: Path, base_url: str = BASE, client=("testclient", 50000), **kw) -> TestClient:
    return TestClient(create_app(state, out, who="tester", **kw), base_url=base_url, client=client,
                      follow_redirects=False)


def _csrf(client: TestClient, page: str = "/queue") -> str:
    html = client.get(page, follow_redirects=True).text
    return re.search(r'name="csrf" content="([^"]+)"', html).group(1)


def _status(out: Path, image_id: str) -> str:
    return Catalog.open(out / ".state").by_image_id(image_id)["status"]


def test_queue_lists_and_filters(queue):
    out, state = queue
    client = _client(out, state)
    page = client.get("/queue").text
    assert all(i in page for i in IDS)
    only = client.get("/queue", params={"reason": "detail_loss"}).text
    assert IDS[1] in only and IDS[0] not in only
    shoot_b = client.get("/queue", params={"shoot": "shoot-b"}).text
    assert IDS[2] in shoot_b and IDS[0] not in shoot_b
    assert IDS[0] not in client.get("/queue", params={"status": "approved"}).text


def test_image_page_shows_metrics_thresholds_and_actions(queue):
    out, state = queue
    page = _client(out, state).get(f"/image/{IDS[1]}").text
    assert "detail_retention" in page and "0.85" in page     # value against the catalog preset's min
    assert 'id="approve-form"' in page and 'id="rerun-form"' in page and 'name="dust.strength"' in page
    assert 'name="cutout.band"' in page and 'value="shine"' in page


def test_actions_need_the_csrf_token(queue):
    out, state = queue
    client = _client(out, state)
    assert client.post(f"/image/{IDS[0]}/approve", data={}).status_code == 403      # no cookie, no token
    token = _csrf(client)
    assert client.post(f"/image/{IDS[0]}/approve", data={"csrf": "forged"}).status_code == 403
    assert client.post(f"/image/{IDS[0]}/reject", data={"note": "x"}).status_code == 403
    assert client.post("/batch/approve", data={"ids": IDS[0]}).status_code == 403
    other = _client(out, state)
    _csrf(other)
    assert other.post(f"/image/{IDS[0]}/approve", data={"csrf": token}).status_code == 403   # someone else's token
    assert _status(out, IDS[0]) == "review"
    assert client.post(f"/image/{IDS[0]}/approve", headers={"X-CSRF-Token": token}).status_code == 303


def test_approve_reject_publish_and_audit(queue):
    out, state = queue
    client = _client(out, state)
    token = _csrf(client)
    r = client.post(f"/image/{IDS[0]}/approve", data={"csrf": token, "ctx": "status=open"})
    assert r.status_code == 303 and r.headers["location"].startswith(f"/image/{IDS[1]}")   # on to the next
    r = client.post(f"/image/{IDS[1]}/reject", data={"csrf": token, "note": "scratched <b>stone</b>"})
    assert r.status_code == 303
    df = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("image_id")
    assert df.loc[IDS[0], "status"] == "exported"
    assert all((out / p).is_file() for p in df.loc[IDS[0], "exports"].split(";"))
    assert df.loc[IDS[1], "status"] == "rejected" and "reviewer_rejected" in df.loc[IDS[1], "reasons"]
    assert not (out / ".staging" / "shoot-a" / IDS[1]).exists() and not list((out / "exports").glob(f"*/R1_*"))
    rows = sqlite3.connect(state / "catalog.sqlite").execute(
        "select who, action, image_id, details from audit_log order by id").fetchall()
    assert [(w, a, i) for w, a, i, _ in rows] == [("tester", "approve", IDS[0]), ("tester", "reject", IDS[1])]
    assert json.loads(rows[1][3])["note"] == "scratched <b>stone</b>"
    audit = client.get("/audit").text
    assert "scratched &lt;b&gt;stone&lt;/b&gt;" in audit and "<b>stone</b>" not in audit   # escaped
    # a decided image offers no actions and cannot be decided twice
    assert 'id="approve-form"' not in client.get(f"/image/{IDS[0]}").text
    r = client.post(f"/image/{IDS[0]}/reject", data={"csrf": token})
    assert "not+waiting+for+review" in r.headers["location"] and _status(out, IDS[0]) == "exported"


def test_batch_approve(queue):
    out, state = queue
    client = _client(out, state)
    token = _csrf(client)
    r = client.post("/batch/approve", data={"csrf": token, "ids": [IDS[0], IDS[2], "../../etc"]})
    assert r.status_code == 303 and "approved+2+of+2" in r.headers["location"]
    assert _status(out, IDS[0]) == _status(out, IDS[2]) == "exported" and _status(out, IDS[1]) == "review"


@pytest.mark.parametrize("url", [
    "/img/../../.state/catalog.sqlite", "/img/%2e%2e/%2e%2e/.state/catalog.sqlite",
    f"/img/{IDS[0]}/..%2F..%2F..%2F.state%2Fcatalog.sqlite", f"/img/{IDS[0]}/before.jpg",
    f"/img/{IDS[0]}/%2e%2e", "/img/0000000000000000/before", f"/img/{IDS[0].upper()}/before",
    "/img/..%2F..%2F..%2Fetc%2Fpasswd/before", "/static/../app.py", "/static/%2e%2e/app.py",
    "/static/..%2Fapp.py", "/image/..%2F..%2Fetc%2Fpasswd",
    # tiles: the same image has a real tile at /tile/0/0/0.png (checked below), these must not reach anything
    f"/img/{IDS[0]}/tile/0/0/..%2F..%2F..%2F.state%2Fcatalog.sqlite", f"/img/{IDS[0]}/tile/0/0/%2e%2e.png",
    f"/img/{IDS[0]}/tile/0/%2e%2e/0.png", f"/img/{IDS[0]}/tile/%2e%2e/0/0.png",
    f"/img/{IDS[0]}/tile/..%2F..%2F.state/0/0.png", f"/img/{IDS[0]}/tile/0/0/0.png%2F..%2F..%2Fcutout.png",
    f"/img/{IDS[0]}/tile/0/0/cutout.png", f"/img/{IDS[0]}/tile/0/0/0.png.png", f"/img/{IDS[0]}/tile/0/0/0",
    f"/img/{IDS[0]}/tile/0/0/0.jpg", f"/img/{IDS[0]}/tile/0/-1/0.png", f"/img/{IDS[0]}/tile/-1/0/0.png",
    f"/img/{IDS[0]}/tile/0/0/%200.png", f"/img/{IDS[0]}/tile/0/0/0x1.png", f"/img/{IDS[0]}/tile/1e1/0/0.png",
    "/img/..%2F..%2F.staging/tile/0/0/0.png", f"/img/{IDS[0].upper()}/tile/0/0/0.png",
    "/img/0000000000000000/tile/0/0/0.png", f"/img/{IDS[0]}/tile/0/0/0/0.png", f"/img/{IDS[0]}/tiles/0/0/0.png",
    f"/img/{IDS[0]}/evidence.json", f"/img/{IDS[0]}/cutout",
])
def test_no_path_traversal_through_image_urls(cutout_queue, url):
    out, state = cutout_queue
    client = _client(out, state)
    assert client.get(f"/img/{IDS[0]}/tile/0/0/0.png").status_code == 200
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code)


def test_previews_and_overlays_are_served(queue):
    out, state = queue
    client = _client(out, state)
    assert client.get(f"/img/{IDS[0]}/before").content == (out / "review" / "shoot-a" / IDS[0] / "before.jpg").read_bytes()
    for kind in ("mask", "defects", "detail"):
        r = client.get(f"/img/{IDS[0]}/{kind}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        im = Image.open(io.BytesIO(r.content))
        assert im.mode == "RGBA" and np.asarray(im)[20, 20, 3] > 0 and np.asarray(im)[2, 2, 3] == 0


def test_a_catalog_row_cannot_point_outside_the_review_folder(queue):
    out, state = queue
    with sqlite3.connect(state / "catalog.sqlite") as db:
        db.execute("update images set shoot = '../..' where image_id = ?", (IDS[0],))
    assert _client(out, state).get(f"/img/{IDS[0]}/before").status_code == 404


def test_tiles_cut_the_staged_cutout_at_every_level(cutout_queue):
    out, state = cutout_queue
    client = _client(out, state)
    src = _cutout()
    # level 0 is the source grid: 3 x 2 tiles of 512, the last column 276 wide, the last row 188 high
    for ty, h in enumerate((512, 188)):
        for tx, w in enumerate((512, 512, 276)):
            t = _tile(client, IDS[0], 0, tx, ty)
            assert t.shape == (h, w, 4)
            assert np.array_equal(t, src[ty * 512:ty * 512 + h, tx * 512:tx * 512 + w])
    # each next level halves: 650 x 350 in two tiles, then 325 x 175 in one
    assert _tile(client, IDS[0], 1, 0, 0).shape == (350, 512, 4) and _tile(client, IDS[0], 1, 1, 0).shape == (350, 138, 4)
    top = _tile(client, IDS[0], 2, 0, 0)
    assert top.shape == (175, 325, 4)
    assert top[0, 0, 3] == 0 and tuple(top[60, 100]) == (210, 170, 60, 255)   # outside / on the piece
    assert top[87, 162, 3] == 0                                                   # the hole is still a hole
    edge = top[40:140, 50]                           # half transparent, half gold: no red from under alpha 0
    assert (abs(edge[:, 3].astype(int) - 128) < 8).all() and (abs(edge[:, :3].astype(int) - (210, 170, 60)) <= 2).all()
    for level, tx, ty in [(3, 0, 0), (0, 3, 0), (0, 0, 2), (1, 2, 0), (1, 0, 1), (2, 1, 0), (2, 0, 1),
                          (99999, 0, 0), (0, 99999, 99999)]:
        assert client.get(f"/img/{IDS[0]}/tile/{level}/{tx}/{ty}.png").status_code == 404, (level, tx, ty)
    assert client.get(f"/img/{IDS[1]}/tile/0/0/0.png").status_code == 404          # no staged cut-out
    assert client.get("/img/ffffffffffffffff/tile/0/0/0.png").status_code == 404    # unknown image


def test_tiles_come_from_the_catalog_row_inside_out_only(cutout_queue, tmp_path):
    out, state = cutout_queue
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(_cutout(), "RGBA").save(outside)
    row = Catalog.open(state).by_image_id(IDS[0])
    for bad in (str(outside), "../elsewhere.png", str(out / ".state" / "catalog.sqlite")):
        Catalog.open(state).set_status(row["shoot"], row["source"], staged={"cutout": bad}, exports={})
        assert _client(out, state).get(f"/img/{IDS[0]}/tile/0/0/0.png").status_code == 404, bad
    page = _client(out, state).get(f"/image/{IDS[0]}").text
    assert 'id="deep"' not in page and "no staged full-resolution cut-out" in page


def test_decoded_cutouts_are_an_lru_bounded_in_memory(cutout_queue):
    out, state = cutout_queue
    catalog = Catalog.open(state)
    for image_id in IDS[1:]:                          # every image gets a cut-out of its own
        row = catalog.by_image_id(image_id)
        path = out / ".staging" / row["shoot"] / image_id / "cutout.png"
        Image.fromarray(_cutout(), "RGBA").save(path)
        catalog.set_status(row["shoot"], row["source"], staged={"cutout": str(path)})
    app = create_app(state, out, who="tester", tile_cache_mb=8)     # one decoded cut-out is ~4.8 MB
    client = TestClient(app, base_url=BASE)
    for image_id in (*IDS, IDS[0]):
        assert client.get(f"/img/{image_id}/tile/1/0/0.png").status_code == 200
        assert len(app.state.pyramids.entries) == 1 and app.state.pyramids.nbytes <= 8 << 20
    assert client.get(f"/img/{IDS[0]}/tile/0/1/1.png").status_code == 200
    assert next(iter(app.state.pyramids.entries))[0].endswith(f"{IDS[0]}/cutout.png")


def test_an_approved_image_tiles_its_exported_cutout(cutout_queue):
    out, state = cutout_queue
    client = _client(out, state)
    token = _csrf(client)
    assert client.post(f"/image/{IDS[0]}/approve", data={"csrf": token}).status_code == 303
    assert _status(out, IDS[0]) == "exported"
    assert _tile(client, IDS[0], 0, 2, 1).shape == (188, 276, 4)


def test_image_page_offers_backdrops_full_resolution_viewer_and_findings(cutout_queue):
    out, state = cutout_queue
    client = _client(out, state)
    page = client.get(f"/image/{IDS[0]}").text
    for kind in ("white", "checker", "grey", "black", "magenta"):
        assert f'data-backdrop="{kind}"' in page
    assert "<kbd>g</kbd> backdrop" in page and "<kbd>1</kbd>&ndash;<kbd>9</kbd> jump" in page    # in the ? help
    assert all(a in page for a in ('data-width="1300"', 'data-height="700"', 'data-levels="3"', 'data-tile="512"'))
    # the findings, in words, with where they are and a jump to their box (as fractions of the image)
    assert "hole_not_backdrop" in page and "does not look like the backdrop seen through it" in page
    assert "upper left: x 100&ndash;400, y 50&ndash;250 (300 &times; 200 px)" in page
    assert f'data-box="{100 / 1300} {50 / 700} {400 / 1300} {250 / 700}"' in page
    assert "lower right: x 1200&ndash;1300, y 600&ndash;700 (100 &times; 100 px)" in page   # clipped to the image
    assert "a &lt;b&gt;white&lt;/b&gt; fringe" in page and "<b>white</b>" not in page
    assert page.count('class="jump"') == 2 and "no location given" in page        # a finding without a box
    assert 'data-overlays="mask defects detail evidence"' in page
    r = client.get(f"/img/{IDS[0]}/evidence")
    assert r.status_code == 200 and r.content == (out / "review" / "shoot-a" / IDS[0] / "evidence.png").read_bytes()


def test_image_page_without_or_with_broken_evidence(cutout_queue):
    out, state = cutout_queue
    client = _client(out, state)
    r = client.get(f"/image/{IDS[1]}")                          # an older image: no evidence, no cut-out
    assert r.status_code == 200
    page = r.text
    assert "no evidence.json" in page and 'id="findings"' not in page and 'id="deep"' not in page
    assert 'data-overlays="mask defects detail"' in page
    assert client.get(f"/img/{IDS[1]}/evidence").status_code == 404
    review = out / "review" / "shoot-a" / IDS[0]
    (review / "evidence.json").write_text("{not json")
    r = client.get(f"/image/{IDS[0]}")
    assert r.status_code == 200 and "evidence.json unreadable" in r.text
    (review / "evidence.json").write_text(json.dumps({"findings": [{"code": "x", "text": "y", "box": "1,2,3,4"},
                                                                   "junk", {"code": "z", "box": [5, 5, 5, 9]}]}))
    r = client.get(f"/image/{IDS[0]}")
    assert r.status_code == 200 and r.text.count('class="finding"') == 2 and 'class="jump"' not in r.text


def test_token_login_when_required(queue):
    out, state = queue
    client = _client(out, state, token="s3cret")
    r = client.get("/queue")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"/img/{IDS[0]}/before").status_code == 303
    token = _csrf(client, "/login")
    assert client.post(f"/image/{IDS[0]}/approve", data={"csrf": token}).status_code == 401
    r = client.post("/login", data={"csrf": token, "who": "ana", "token": "wrong"})
    assert "wrong+token" in r.headers["location"] and client.get("/queue").status_code == 303
    r = client.post("/login", data={"csrf": token, "who": "ana", "token": "s3cret", "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    assert client.get("/queue").status_code == 200
    assert client.post(f"/image/{IDS[0]}/approve", data={"csrf": token}).status_code == 303
    who = sqlite3.connect(state / "catalog.sqlite").execute(
        "select who from audit_log where action = 'approve'").fetchone()[0]
    assert who == "ana"


def test_serve_refuses_other_hosts_without_a_token(queue, monkeypatch, capsys):
    from flows.cli import main

    out, _ = queue
    monkeypatch.delenv("LOUPE_REVIEW_TOKEN", raising=False)
    assert main(["review", "serve", "--out", str(out), "--host", "0.0.0.0"]) == 2
    assert "LOUPE_REVIEW_TOKEN" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_rerun_overrides_are_checked_before_anything_runs(queue):
    from flows.review import ReviewError, parse_set, validate_overrides

    out, state = queue
    client = _client(out, state)
    token = _csrf(client)
    r = client.post(f"/image/{IDS[0]}/rerun", data={"csrf": token, "dust.strength": "5"})
    assert r.status_code == 303 and "error" in r.headers["location"]
    assert Catalog.open(state).queue(None)[0]["state"] == "open"
    assert validate_overrides({"stages": {"dust": {"strength": 0.3}}, "skip": ["shine"]}) == {
        "stages": {"dust": {"strength": 0.3}}, "skip": ["shine"]}
    with pytest.raises(ReviewError, match="cannot skip"):
        validate_overrides({"skip": ["polish"]})
    with pytest.raises(ReviewError, match="band"):
        validate_overrides({"stages": {"cutout": {"band": 99}}})
    assert parse_set(["dust.strength=0.3", "cutout.band=4", "neutralize.method=bradford"]) == {
        "dust": {"strength": 0.3}, "cutout": {"band": 4}, "neutralize": {"method": "bradford"}}


def test_a_rerun_of_a_source_changed_since_is_refused_reading_only_that_file(queue, tmp_path, monkeypatch):
    """The re-run hashes the image's own file (not the whole shoot): changed content is one clear
    error, the image goes back to the open queue and the audit log says why."""
    import infra.shoots
    from flows.review import ReviewError, rerun_flow

    out, state = queue
    shoot = tmp_path / "shoot-a"
    shoot.mkdir()
    for name in ("R0_main.jpg", "R1_main.jpg", "R2_main.jpg"):
        (shoot / name).write_bytes(f"{name}, edited since it was processed".encode())
    hashed = []
    digest = infra.shoots.source_digest
    monkeypatch.setattr(infra.shoots, "source_digest", lambda loc: hashed.append(loc.name) or digest(loc))
    with pytest.raises(ReviewError, match="gone or changed"):
        rerun_flow.fn(str(state), str(out), IDS[0], {}, "tester")
    assert hashed == ["R0_main.jpg"]
    assert Catalog.open(state).queue(None)[0]["state"] == "open"
    assert _audit_actions(state)[-1] == "rerun_failed"


# --- hardening: Host / Origin, body and note limits, login throttling -------------------------------

def _audit_actions(state: Path) -> list[str]:
    return [a for (a,) in sqlite3.connect(state / "catalog.sqlite").execute("select action from audit_log")]


def test_dns_rebinding_a_foreign_host_gets_400_and_no_cookie(queue):
    out, state = queue
    client = _client(out, state)
    for url in ("/queue", "/", "/login", "/static/review.js", f"/img/{IDS[0]}/before", "/api/jobs"):
        for host in ("attacker.example", "attacker.example:8765", "127.0.0.1.attacker.example:8765",
                     "localhost.attacker.example", "", "127.0.0.1:8765@attacker.example"):
            r = client.get(url, headers={"host": host})
            assert r.status_code == 400, (url, host, r.status_code)
            assert "set-cookie" not in r.headers and "\n" not in r.text.strip() and IDS[0] not in r.text
    assert not client.cookies                                  # nothing was set on any of them
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765", "127.0.0.1:9"):
        assert client.get("/queue", headers={"host": host}).status_code == 200, host


def test_a_post_from_a_foreign_host_or_origin_approves_nothing(queue):
    out, state = queue
    client = _client(out, state)
    token = _csrf(client)                                      # a valid cookie and token, as a rebound page gets
    form = {"csrf": token, "ids": list(IDS)}
    refused = [({"host": "attacker.example:8765"}, 400),
               ({"origin": "http://attacker.example:8765"}, 403),
               ({"origin": "http://127.0.0.1.attacker.example:8765"}, 403),
               ({"origin": "null"}, 403),
               ({"origin": "file://"}, 403),
               ({"referer": "http://attacker.example:8765/queue"}, 403),
               ({"origin": "http://attacker.example", "referer": f"{BASE}/queue"}, 403)]   # Origin wins
    for headers, status in refused:
        for url in (f"/image/{IDS[0]}/approve", "/batch/approve", f"/image/{IDS[1]}/reject", "/login"):
            r = client.post(url, data=form, headers=headers)
            assert r.status_code == status, (url, headers, r.status_code)
    assert [_status(out, i) for i in IDS] == ["review"] * 3
    assert "approve" not in _audit_actions(state) and "reject" not in _audit_actions(state)
    assert not (out / "exports").exists() or not list((out / "exports").rglob("*.jpg"))
    # the app's own pages, as a browser sends them, still work
    r = client.post(f"/image/{IDS[0]}/approve", data={"csrf": token}, headers={"origin": BASE})
    assert r.status_code == 303 and _status(out, IDS[0]) == "exported"
    r = client.post(f"/image/{IDS[1]}/approve", data={"csrf": token},
                    headers={"referer": f"http://localhost:8765/image/{IDS[1]}"})
    assert r.status_code == 303 and _status(out, IDS[1]) == "exported"


def test_allowed_hosts_are_configurable_and_serve_reads_the_environment(queue, monkeypatch):
    import uvicorn

    out, state = queue
    client = _client(out, state, base_url="http://review.example:8443",
                     allowed_hosts=["Review.Example", "10.0.0.5:1234", "fd00::5"])
    assert client.get("/queue").status_code == 200
    for host, status in (("10.0.0.5", 200), ("[fd00::5]:8765", 200), ("127.0.0.1:8765", 400), ("localhost", 400)):
        assert client.get("/queue", headers={"host": host}).status_code == status, host
    token = _csrf(client)
    assert client.post(f"/image/{IDS[0]}/approve", data={"csrf": token},
                       headers={"origin": "http://127.0.0.1:8765"}).status_code == 403   # not listed here
    assert appmod.default_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert appmod.default_hosts("::1") == ["[::1]", "localhost", "127.0.0.1"]
    assert appmod.default_hosts("0.0.0.0", " review.example, 10.0.0.5 ,") == ["0.0.0.0", "review.example", "10.0.0.5"]
    with pytest.raises(ValueError, match="not a host name"):
        appmod.default_hosts("0.0.0.0", "http://review.example/")
    # serve: bound elsewhere, the bind address plus $LOUPE_REVIEW_HOSTS and nothing of loopback's
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setenv("LOUPE_REVIEW_HOSTS", "review.example,192.168.1.5")
    appmod.serve(state, out, host="0.0.0.0", token="s3cret", who="tester")
    web = TestClient(served["app"], base_url="http://192.168.1.5:8765", follow_redirects=False)
    assert web.get("/login").status_code == 200
    for host, status in (("review.example", 200), ("0.0.0.0:8765", 200), ("127.0.0.1:8765", 400),
                         ("localhost", 400), ("attacker.example", 400)):
        assert web.get("/login", headers={"host": host}).status_code == status, host


def test_request_bodies_are_bounded(queue):
    out, state = queue
    client = _client(out, state)
    token = _csrf(client)
    big = {"csrf": token, "note": "x" * (appmod.MAX_BODY + 1)}
    r = client.post(f"/image/{IDS[0]}/approve", data=big)                     # Content-Length says it
    assert r.status_code == 413 and _status(out, IDS[0]) == "review"
    body = f"csrf={token}&pad=".encode() + b"x" * appmod.MAX_BODY

    def chunks():                                                              # no Content-Length: chunked
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]
    r = client.post(f"/image/{IDS[0]}/approve", content=chunks(),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and _status(out, IDS[0]) == "review"
    assert "approve" not in _audit_actions(state)
    # just under the limit is an ordinary form
    fits = f"csrf={token}&pad=".encode() + b"x" * (appmod.MAX_BODY - 200)
    r = client.post(f"/image/{IDS[0]}/approve", content=fits,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 303 and _status(out, IDS[0]) == "exported"



def test_a_chunked_body_that_never_ends_is_answered_413_over_http(queue):
    """Over a real socket: a chunked POST that goes on past the limit and never sends its last chunk gets 413;
    a server that read bodies to their end would wait here until the timeout."""
    out, state = queue
    with served(create_app(state, out, who="tester")) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        s.sendall(f"POST /image/{IDS[0]}/approve HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"1000\r\n" + b"x" * 0x1000 + b"\r\n"
        try:
            for _ in range(appmod.MAX_BODY // 0x1000 + 2):                  # past the limit, no final 0 chunk
                s.sendall(chunk)
        except OSError:                                                      # the server may close early
            pass
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert _status(out, IDS[0]) == "review"


def test_an_overlong_note_is_refused_and_nothing_is_stored(queue):
    from flows import review

    out, state = queue
    client = _client(out, state)
    token = _csrf(client)
    long = "n" * (review.MAX_NOTE + 1)
    for action in ("reject", "approve"):
        r = client.post(f"/image/{IDS[1]}/{action}", data={"csrf": token, "note": long})
        assert r.status_code == 303 and "error" in r.headers["location"], action
        page = client.get(r.headers["location"]).text
        assert f"note too long ({review.MAX_NOTE + 1} characters, at most {review.MAX_NOTE})" in page
        assert long not in page
    assert _status(out, IDS[1]) == "review"
    queued = next(q for q in Catalog.open(state).queue(None) if q["image_id"] == IDS[1])
    assert queued["state"] == "open" and not queued["note"]
    assert _audit_actions(state) == []
    with pytest.raises(review.ReviewError, match="note too long"):               # the shell's path too
        review.reject(state, out, IDS[1], who="cli", note=long)
    # the longest allowed note goes through whole
    r = client.post(f"/image/{IDS[1]}/reject", data={"csrf": token, "note": "é" * review.MAX_NOTE})
    assert r.status_code == 303 and _status(out, IDS[1]) == "rejected"
    details = sqlite3.connect(state / "catalog.sqlite").execute(
        "select details from audit_log where action = 'reject'").fetchone()[0]
    assert json.loads(details)["note"] == "é" * review.MAX_NOTE


def test_failed_logins_are_throttled_per_client_address(queue, monkeypatch):
    out, state = queue
    app = create_app(state, out, who="tester", token="s3cret")
    guesser = TestClient(app, base_url=BASE, client=("10.0.0.66", 40000), follow_redirects=False)
    token = _csrf(guesser, "/login")
    for n in range(appmod.LOGIN_FAILURES):
        r = guesser.post("/login", data={"csrf": token, "token": f"guess{n}"})
        assert r.status_code == 303 and "wrong+token" in r.headers["location"], n
    r = guesser.post("/login", data={"csrf": token, "token": "s3cret"})        # even the right one, now
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= appmod.LOGIN_WINDOW_S
    assert AUTH_COOKIE_NAME not in r.headers.get("set-cookie", "")
    assert guesser.get("/queue").status_code == 303                           # still not logged in
    assert _audit_actions(state).count("login_failed") == appmod.LOGIN_FAILURES
    # another address is not held back by this one
    reviewer = TestClient(app, base_url=BASE, client=("10.0.0.7", 40001), follow_redirects=False)
    mine = _csrf(reviewer, "/login")
    r = reviewer.post("/login", data={"csrf": mine, "token": "s3cret"})
    assert r.status_code == 303 and r.headers["location"] == "/queue" and reviewer.get("/queue").status_code == 200
    # once the window has passed, the first address may try again
    monkeypatch.setattr(appmod, "LOGIN_WINDOW_S", 0.3)
    time.sleep(0.4)
    r = guesser.post("/login", data={"csrf": token, "token": "s3cret"})
    assert r.status_code == 303 and r.headers["location"] == "/queue" and guesser.get("/queue").status_code == 200


AUTH_COOKIE_NAME = appmod.AUTH_COOKIE
