"""The review web app without a browser: CSRF, login token, image URLs, actions, audit log."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from infra.catalog import Catalog
from infra.reviewapp import create_app, is_loopback

IDS = ("a1b2c3d4e5f60718", "0f1e2d3c4b5a6978", "1234567890abcdef")


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


def _client(out: Path, state: Path, **kw) -> TestClient:
    return TestClient(create_app(state, out, who="tester", **kw), follow_redirects=False)


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
])
def test_no_path_traversal_through_image_urls(queue, url):
    out, state = queue
    r = _client(out, state).get(url)
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
