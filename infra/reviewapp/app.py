"""Review queue web app: server-rendered pages over the catalog's review queue.

A reviewer works the queue from the keyboard: the queue page (filter by shoot,
reason, status; batch approve), an image page (before/after side by side, swipe
or toggle, a zoom loupe to 400%, cut-out / defect / detail-loss / QA-evidence
overlays, the staged full-resolution cut-out in 512 px tiles over a white,
checkerboard or contrasting backdrop, QA's located findings with a jump to each,
the metrics against the preset's thresholds) and the actions approve, reject
(with a note) and re-run with overrides, which go through the same functions as
``loupe review ...`` (``flows.review``) and land in the audit log.

Safety: binds 127.0.0.1 unless told otherwise, and then only with a token
(login page -> signed cookie; failed logins throttled per client address);
only requests whose ``Host`` names an allowed host are answered (else 400,
before any cookie is set: DNS rebinding gives a page a foreign Host); every
POST's ``Origin`` (or ``Referer``) must name an allowed host too, and the POST
must carry a CSRF token that matches the ``loupe_csrf`` cookie (double submit,
SameSite=Strict); request bodies are capped at ``MAX_BODY``; images are served
only by catalog lookup of an ``image_id`` and a fixed set of names, never from a
path taken from the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image, ImageFilter

from flows import review
from infra.catalog import Catalog
from infra.layout import Layout
from infra.storage import Location
from infra.presets import PresetError, load_preset
from tasks.pipeline import STAGE_NAMES

HERE = Path(__file__).parent
IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
PREVIEWS = {"before": "before.jpg", "after": "after.jpg", "overlay": "overlay.png",
            "evidence": "evidence.png"}         # evidence.png: QA's own RGBA overlay at preview size
OVERLAYS = ("mask", "defects", "detail")          # planes of overlay.png: B = alpha, R = defects, G = detail loss
EVIDENCE = "evidence.json"                        # QA's findings with boxes in source pixels, next to before.jpg
BACKDROPS = (("white", "white"), ("checker", "checkerboard"), ("grey", "mid grey"), ("black", "black"),
             ("magenta", "magenta"))
MEDIA = {".jpg": "image/jpeg", ".png": "image/png", ".json": "application/json"}
TILE = 512                                        # tile edge of the full-resolution viewer
NUMBER = re.compile(r"^[0-9]{1,5}$")
MAX_FINDINGS = 200
FILTERS = ("shoot", "reason", "status")
CSRF_COOKIE, AUTH_COOKIE, WHO_COOKIE = "loupe_csrf", "loupe_auth", "loupe_who"
MAX_BODY = 64 * 1024          # bytes of a POST; real forms (100 ids, a 2000-character note) are far smaller
LOGIN_FAILURES, LOGIN_WINDOW_S = 5, 60.0      # wrong tokens per client address per window before 429
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
AUTHORITY = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?$")   # host[:port], IPv6 in brackets
log = logging.getLogger("loupe.review")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(authority: str) -> str:
    """``Host: name[:port]`` -> the lower-case name ('[::1]' keeps its brackets); '' when malformed."""
    m = AUTHORITY.match(authority.strip().lower())
    return m.group(1) if m else ""


def as_host(name: str) -> str:
    """A configured host name in the form ``host_name`` gives (a port is dropped, a bare IPv6 gets brackets)."""
    got = host_name(name) or host_name(f"[{name.strip()}]")
    if not got:
        raise ValueError(f"not a host name: {name!r}")
    return got


def default_hosts(bind: str, extra: str = "") -> list[str]:
    """The host names the app answers to when bound to ``bind``: that address, on loopback also localhost,
    127.0.0.1 and [::1], plus ``extra`` (a comma list: ``serve`` passes $LOUPE_REVIEW_HOSTS). Any port."""
    names = [bind, *(LOOPBACK_NAMES if is_loopback(bind) else ()), *extra.split(",")]
    return list(dict.fromkeys(as_host(n) for n in names if n.strip()))


def same_site(request: Request, allowed: set[str]) -> bool:
    """A POST's ``Origin``, or its ``Referer`` when it has none, must name an allowed host ("null" and other
    schemes fail). A request with neither comes from no browser page (curl, scripts, the tests), so it is no
    cross-site threat; it still needs the CSRF token."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and host_name(parts.netloc) in allowed


async def bounded_body(request: Request) -> bytes | None:
    """The request body, or None when it is longer than MAX_BODY. A Content-Length over it is refused unread;
    a chunked body (or one longer than it said) is read only up to the limit, never to its end."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        return None
    chunks, size = [], 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def levels_for(width: int, height: int) -> int:
    """Zoom levels of a ``width`` x ``height`` image: 0 is full resolution, each next halves, the last fits one tile."""
    return 1 + max(0, math.ceil(math.log2(max(width, height, 1) / TILE)))


class Pyramids:
    """Decoded cut-outs at every zoom level, least recently used first out, bounded by bytes.

    An entry is keyed by path, mtime and size, so a re-run's new file is decoded afresh. One image larger
    than the whole budget is still kept (alone) while it is the one being looked at.
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple, tuple[list[Image.Image], int]] = OrderedDict()
        self.lock = threading.Lock()
        self.loading: dict[tuple, threading.Lock] = {}

    @property
    def nbytes(self) -> int:
        with self.lock:
            return sum(n for _, n in self.entries.values())

    def get(self, path: Location) -> list[Image.Image]:
        key = (str(path), path.version())
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key][0]
            gate = self.loading.setdefault(key, threading.Lock())
        with gate:                                    # one decode per file, other files go on
            with self.lock:
                if key in self.entries:
                    self.entries.move_to_end(key)
                    return self.entries[key][0]
            levels = self.decode(path)
            with self.lock:
                for other in [k for k in self.entries if k[0] == key[0]]:
                    del self.entries[other]           # an older version of the same file
                self.entries[key] = (levels, sum(im.width * im.height * 4 for im in levels))
                self.loading.pop(key, None)
                total = sum(n for _, n in self.entries.values())
                while total > self.budget and len(self.entries) > 1:
                    _, (_, n) = self.entries.popitem(last=False)
                    total -= n
        return levels

    @staticmethod
    def decode(path: Location) -> list[Image.Image]:
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            base = im.convert("RGBA")                 # a 16-bit PNG arrives as 8-bit RGBA
        levels, cur = [base], base.convert("RGBa")    # halve premultiplied: no dark or coloured fringe
        for _ in range(levels_for(*base.size) - 1):
            cur = cur.reduce(2)
            levels.append(cur.convert("RGBA"))
        return levels


def where_in(box: list[float], width: float, height: float) -> str:
    """The box's centre in words: upper/middle/lower and left/centre/right thirds."""
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    row = ("upper", "middle", "lower")[min(2, max(0, int(cy * 3)))]
    col = ("left", "centre", "right")[min(2, max(0, int(cx * 3)))]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def read_evidence(path: Location | None, size: tuple[int, int] | None) -> dict:
    """QA's ``evidence.json`` for the page: findings with their text, box (source pixels, clipped) and the box as
    fractions of the image (for the viewer). ``size``: the cut-out's, used when the file gives none."""
    got = {"present": path is not None, "error": "", "findings": []}
    if path is None:
        return got
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        got["error"] = f"{EVIDENCE} unreadable: {exc}"
        return got
    given = data.get("size")
    if (isinstance(given, list) and len(given) == 2 and all(isinstance(v, (int, float)) for v in given)
            and min(given) > 0):
        size = (float(given[0]), float(given[1]))
    findings = data.get("findings")
    for f in (findings if isinstance(findings, list) else [])[:MAX_FINDINGS]:
        if not isinstance(f, dict):
            continue
        item = {"code": str(f.get("code") or "")[:80], "text": str(f.get("text") or "")[:500],
                "box": None, "frac": None, "where": ""}
        box = f.get("box")
        if (size and isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            w, h = size
            x0, x1 = sorted((min(max(box[0], 0), w), min(max(box[2], 0), w)))
            y0, y1 = sorted((min(max(box[1], 0), h), min(max(box[3], 0), h)))
            if x1 > x0 and y1 > y0:
                item["box"] = [round(v) for v in (x0, y0, x1, y1)]
                item["frac"] = [x0 / w, y0 / h, x1 / w, y1 / h]
                item["where"] = where_in([x0, y0, x1, y1], w, h)
        got["findings"].append(item)
    return got


def create_app(state: Path | str, out: Path, *, token: str | None = None, preset: str | None = None,
               who: str = "reviewer", device: str = "auto", ray_address: str | None = None,
               tile_cache_mb: int = 512, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app for one OUT folder. ``token``: require a login with it (always set it when not on loopback).
    ``tile_cache_mb``: memory for decoded full-resolution cut-outs (an LRU over images). ``allowed_hosts``:
    the names it answers to in ``Host`` (any port; default: the loopback names, see ``default_hosts``)."""
    layout = Layout.of(out)
    out = layout.root
    state = str(state)
    catalog = Catalog.open(state)
    secret = secrets.token_bytes(32)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""
    reruns = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-rerun")   # one re-run at a time
    jobs: dict[str, object] = {}
    jobs_lock = threading.Lock()
    allowed = set(default_hosts("127.0.0.1") if allowed_hosts is None else map(as_host, allowed_hosts))
    failures: dict[str, list[float]] = {}             # client address -> times of its recent wrong tokens
    failures_lock = threading.Lock()

    app = FastAPI(title="Loupe review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pyramids = Pyramids(tile_cache_mb << 20)
    app.state.reruns, app.state.jobs, app.state.pyramids = reruns, jobs, pyramids

    def auth_value() -> str:
        return hmac.new(secret, (token or "").encode(), hashlib.sha256).hexdigest()

    def authed(request: Request) -> bool:
        return token is None or hmac.compare_digest(request.cookies.get(AUTH_COOKIE, ""), auth_value())

    def login_attempt(client: str) -> tuple[int, float]:
        """(seconds ``client`` must wait, 0 if it may try now; this attempt's stamp). An attempt counts as a
        failure from the start, so parallel guesses cannot all pass the check; a right token takes it back."""
        now = time.monotonic()
        with failures_lock:
            recent = [t for t in failures.pop(client, []) if now - t < LOGIN_WINDOW_S]
            wait = 0
            if len(recent) >= LOGIN_FAILURES:         # until the oldest of the last few leaves the window
                wait = max(1, math.ceil(recent[-LOGIN_FAILURES] + LOGIN_WINDOW_S - now))
            failures[client] = recent if wait else recent + [now]
            if len(failures) > 4096:                  # many addresses (IPv6): forget the stale ones
                for k in [k for k, v in failures.items() if not v or now - v[-1] >= LOGIN_WINDOW_S]:
                    del failures[k]
        return wait, now

    def login_succeeded(client: str, stamp: float) -> None:
        with failures_lock:
            if stamp in failures.get(client, ()):
                failures[client].remove(stamp)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # DNS rebinding: a page on attacker.example re-pointed at 127.0.0.1 is same-origin with this app as
        # far as the browser knows; only the Host header tells. Refuse it before anything, a cookie included.
        if host_name(request.headers.get("host", "")) not in allowed:
            return Response("unknown Host header: the review app answers only to its configured host names "
                            "(LOUPE_REVIEW_HOSTS)", status_code=400)
        if request.method == "POST" and not same_site(request, allowed):
            return Response("cross-site request refused (Origin/Referer is not this app)", status_code=403)
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not csrf
        request.state.csrf = csrf or secrets.token_urlsafe(32)
        path = request.url.path
        open_path = path.startswith("/static/") or path == "/login"
        if not open_path and not authed(request):
            if request.method == "GET":
                response = RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)
            else:
                response = Response("login required", status_code=401)
        elif request.method == "POST":
            body = await bounded_body(request)
            form = parse_qs((body or b"").decode("utf-8", "replace"), keep_blank_values=True)
            sent = request.headers.get("x-csrf-token") or (form.get("csrf") or [""])[0]
            if body is None:                          # nothing of it parsed: form is empty
                response = Response(f"request body over {MAX_BODY // 1024} KB refused", status_code=413)
            elif fresh or not sent or not hmac.compare_digest(sent, csrf):
                response = Response("CSRF token missing or wrong: reload the page and try again", status_code=403)
            else:
                request.state.form = form
                response = await call_next(request)
        else:
            response = await call_next(request)
        if fresh:
            response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    # --- helpers -----------------------------------------------------------
    def render(request: Request, name: str, **context) -> HTMLResponse:
        html = env.get_template(name).render(csrf=request.state.csrf, who=reviewer(request),
                                             auth=token is not None, **context)
        return HTMLResponse(html)

    def reviewer(request: Request) -> str:
        return (request.cookies.get(WHO_COOKIE) or who)[:64]

    def form(request: Request) -> dict[str, list[str]]:
        return getattr(request.state, "form", {})

    def first(f: dict, key: str, default: str = "") -> str:
        return (f.get(key) or [default])[0]

    def filters_of(params) -> dict[str, str]:
        got = {k: (params.get(k) or "") for k in FILTERS}
        got["status"] = got["status"] or "open"
        return got

    def ctx_of(f: dict) -> dict[str, str]:
        return filters_of({k: v[0] for k, v in parse_qs(first(f, "ctx")).items()})

    def queue_rows(flt: dict[str, str]) -> list[dict]:
        rows = []
        for q in catalog.queue(None if flt["status"] == "all" else flt["status"]):
            if flt["shoot"] and q["shoot"] != flt["shoot"]:
                continue
            if flt["reason"] and flt["reason"] not in q["reasons"].split(";"):
                continue
            image = catalog.by_image_id(q["image_id"]) or {}
            rows.append({**q, "sku": image.get("sku", ""), "view": image.get("view", ""),
                         "status": image.get("status", "")})
        return rows

    def next_after(image_id: str, before: list[str], flt: dict[str, str]) -> str:
        """Where to go after acting on ``image_id``: the next image still in the filtered queue."""
        now = [r["image_id"] for r in queue_rows(flt)]
        if image_id in before:
            i = before.index(image_id)
            for candidate in before[i + 1:] + before[:i][::-1]:
                if candidate in now:
                    return f"/image/{candidate}?{urlencode(flt)}"
        return f"/queue?{urlencode(flt)}"

    def with_msg(url: str, msg: str) -> str:
        return url + ("&" if "?" in url else "?") + urlencode({"msg": msg})

    def known_image(image_id: str) -> dict | None:
        if not IMAGE_ID.match(image_id):
            return None
        return catalog.by_image_id(image_id)

    def preview_file(row: dict, name: str) -> Location | None:
        """``review/<shoot>/<image_id>/<file>`` for a name in PREVIEWS (or EVIDENCE), if it is there."""
        if row["shoot"] in ("", ".", "..") or "/" in row["shoot"]:   # folder names, but still check
            return None
        path = layout.review(row["shoot"], row["image_id"]) / PREVIEWS.get(name, EVIDENCE)
        return path if path.exists() else None

    def cutout_file(row: dict) -> Location | None:
        """The full-resolution cut-out (RGBA PNG, source grid): the staged one, or once approved the exported
        one. Paths come from the catalog, never from the URL, and must lie inside OUT."""
        for paths in (row.get("staged"), row.get("exports")):
            try:
                name = json.loads(paths or "{}").get("cutout")
            except (ValueError, AttributeError):
                continue
            if not isinstance(name, str) or not name:
                continue
            path = layout.abs(name)
            local = path.local_path()
            inside = (out.local_path() in local.resolve().parents) if local is not None else path.root == out.root
            if inside and ".." not in name.split("/") and path.exists():
                return path
        return None

    def cutout_info(row: dict) -> dict | None:
        path = cutout_file(row)
        if path is None:
            return None
        try:
            with path.local_file() as local, Image.open(local) as im:   # reads the header only
                width, height = im.size
        except (OSError, ValueError):
            return None
        return {"width": width, "height": height, "levels": levels_for(width, height), "tile": TILE,
                "version": path.version()}

    @lru_cache(maxsize=64)
    def rules_for(preset_name: str):
        try:
            return load_preset(preset or preset_name).qa, ""
        except PresetError as exc:
            return (), str(exc).splitlines()[0]

    # --- pages -------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/queue", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/queue", error: str = ""):
        return render(request, "login.html", next=next if next.startswith("/") and not next.startswith("//") else "/queue",
                      error=error, need_token=token is not None)

    @app.post("/login")
    def login(request: Request):
        f = form(request)
        name = first(f, "who").strip()[:64] or who
        nxt = first(f, "next", "/queue")
        nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/queue"
        client = request.client.host if request.client else ""
        if token is not None:
            wait, stamp = login_attempt(client)
            if wait:                                  # not even compared: guessing stays at 5 a minute
                return Response(f"too many wrong tokens from {client}: try again in {wait} s", status_code=429,
                                headers={"Retry-After": str(wait)})
            if not hmac.compare_digest(first(f, "token").encode(), token.encode()):
                catalog.audit(name, "login_failed", "", {"client": client})
                return RedirectResponse("/login?" + urlencode({"next": nxt, "error": "wrong token"}),
                                        status_code=303)
            login_succeeded(client, stamp)
        response = RedirectResponse(nxt, status_code=303)
        if token is not None:
            response.set_cookie(AUTH_COOKIE, auth_value(), httponly=True, samesite="strict")
        response.set_cookie(WHO_COOKIE, name, httponly=True, samesite="strict")
        catalog.audit(name, "login", "", {})
        return response

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request, msg: str = ""):
        flt = filters_of(request.query_params)
        rows = queue_rows(flt)
        everything = catalog.queue(None)
        shoots = sorted({q["shoot"] for q in everything})
        reasons = sorted({r for q in everything for r in q["reasons"].split(";") if r})
        return render(request, "queue.html", rows=rows, flt=flt, shoots=shoots, reasons=reasons,
                      states=review.QUEUE_STATES, ctx=urlencode(flt), msg=msg)

    @app.get("/image/{image_id}", response_class=HTMLResponse)
    def image_page(request: Request, image_id: str, msg: str = ""):
        row = known_image(image_id)
        if row is None:
            return HTMLResponse("no such image", status_code=404)
        flt = filters_of(request.query_params)
        ids = [r["image_id"] for r in queue_rows(flt)]
        pos = ids.index(image_id) if image_id in ids else -1
        nav = {"prev": ids[pos - 1] if pos > 0 else None,
               "next": ids[pos + 1] if 0 <= pos < len(ids) - 1 else None}
        queued = next((q for q in catalog.queue(None) if q["image_id"] == image_id), None)
        metrics = json.loads(row["metrics"] or "{}")
        rules, rules_error = rules_for(row["preset"])
        flagged = set(row["reasons"].split(";"))
        table = []
        for name in sorted(metrics):
            value = metrics[name]
            for rule in [r for r in rules if r.column == name] or [None]:
                fail = rule is not None and value is not None and (
                    (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max))
                table.append({"name": name, "value": value, "rule": rule, "fail": fail,
                              "reason_flagged": rule is not None and rule.reason in flagged})
        table.sort(key=lambda t: (not t["fail"], t["rule"] is None, t["name"]))
        actionable = row["status"] == "review" and (queued is None or queued["state"] == "open")
        cutout = cutout_info(row)
        evidence = read_evidence(preview_file(row, EVIDENCE),
                                 (cutout["width"], cutout["height"]) if cutout else None)
        overlays = [*OVERLAYS] if preview_file(row, "overlay") else []
        if preview_file(row, "evidence"):
            overlays.append("evidence")
        return render(request, "image.html", row=row, queued=queued, table=table, rules_error=rules_error,
                      nav=nav, pos=pos, total=len(ids), ctx=urlencode(flt), flt=flt, msg=msg,
                      actionable=actionable, stages=STAGE_NAMES, has_preview=preview_file(row, "after") is not None,
                      audit=catalog.audit_rows(image_id, limit=50), exports=json.loads(row["exports"] or "{}"),
                      cutout=cutout, evidence=evidence, overlays=overlays, backdrops=BACKDROPS)

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, image_id: str = ""):
        return render(request, "audit.html", rows=catalog.audit_rows(image_id or None), image_id=image_id)

    @app.get("/img/{image_id}/{name}")
    def image_file(image_id: str, name: str):
        row = known_image(image_id)
        if row is None or (name not in PREVIEWS and name not in OVERLAYS):
            return Response("not found", status_code=404)
        if name in PREVIEWS:
            path = preview_file(row, name)
            if path is None:
                return Response("not found", status_code=404)
            if path.local_path() is not None:
                return FileResponse(path.local_path(), headers={"Cache-Control": "no-cache"})
            return Response(path.read_bytes(), media_type=MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})
        path = preview_file(row, "overlay")
        if path is None:
            return Response("not found", status_code=404)
        return Response(overlay_png(path, path.version(), name), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/img/{image_id}/tile/{level}/{tx}/{ty}.png")
    def tile(image_id: str, level: str, tx: str, ty: str):
        """A 512 px tile of the full-resolution cut-out: level 0 is full size, each next level halves."""
        row = known_image(image_id)
        if row is None or not all(NUMBER.match(v) for v in (level, tx, ty)):
            return Response("not found", status_code=404)
        path = cutout_file(row)
        if path is None:
            return Response("not found", status_code=404)
        try:
            levels = pyramids.get(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            log.exception("cannot decode %s", path)
            return Response("not found", status_code=404)
        lv, x, y = int(level), int(tx), int(ty)
        if lv >= len(levels) or x * TILE >= levels[lv].width or y * TILE >= levels[lv].height:
            return Response("not found", status_code=404)
        im = levels[lv]
        buf = io.BytesIO()
        im.crop((x * TILE, y * TILE, min(im.width, (x + 1) * TILE), min(im.height, (y + 1) * TILE))).save(
            buf, "PNG", compress_level=1)
        # the page asks with ?v=<mtime>, so a re-run's new cut-out gets new URLs
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/jobs")
    def job_status():
        with jobs_lock:
            return JSONResponse({i: ("running" if not f.done() else "failed" if f.exception() else f.result())
                                 for i, f in jobs.items()})

    # --- actions -----------------------------------------------------------
    @app.post("/image/{image_id}/approve")
    def approve_one(request: Request, image_id: str):
        return act(request, image_id, lambda who_: review.approve(state, out, image_id, who=who_,
                                                                    note=first(form(request), "note")), "approved")

    @app.post("/image/{image_id}/reject")
    def reject_one(request: Request, image_id: str):
        return act(request, image_id, lambda who_: review.reject(state, out, image_id, who=who_,
                                                                   note=first(form(request), "note")), "rejected")

    @app.post("/image/{image_id}/rerun")
    def rerun_one(request: Request, image_id: str):
        f = form(request)
        stages: dict[str, dict] = {}
        for key, values in f.items():
            stage, dot, param = key.partition(".")
            if dot and stage in STAGE_NAMES and values and values[0].strip():
                try:
                    value = json.loads(values[0])
                except json.JSONDecodeError:
                    value = values[0].strip()
                stages.setdefault(stage, {})[param] = value
        overrides = {"stages": stages, "skip": f.get("skip", [])}

        def start(who_: str) -> None:
            clean = review.request_rerun(state, image_id, overrides, who=who_)
            with jobs_lock:
                jobs[image_id] = reruns.submit(run_rerun, image_id, clean, who_)
        return act(request, image_id, start, "sent to re-run")

    def run_rerun(image_id: str, clean: dict, who_: str) -> str:
        try:
            return review.rerun_flow(state, str(out), image_id, clean, who_, preset, device, ray_address)
        except Exception:
            log.exception("re-run of %s failed", image_id)
            raise

    def act(request: Request, image_id: str, do, done: str):
        if known_image(image_id) is None:
            return Response("not found", status_code=404)
        flt = ctx_of(form(request))
        before = [r["image_id"] for r in queue_rows(flt)]
        try:
            do(reviewer(request))
        except review.ReviewError as exc:
            return RedirectResponse(with_msg(f"/image/{image_id}?{urlencode(flt)}", f"error: {exc}"), status_code=303)
        return RedirectResponse(with_msg(next_after(image_id, before, flt), f"{image_id} {done}"), status_code=303)

    @app.post("/batch/approve")
    def batch_approve(request: Request):
        f = form(request)
        ids = [i for i in f.get("ids", []) if IMAGE_ID.match(i)]
        flt = ctx_of(f)
        if not ids:
            return RedirectResponse(with_msg(f"/queue?{urlencode(flt)}", "nothing selected (x marks a row)"), status_code=303)
        results = review.approve_many(state, out, ids, who=reviewer(request))
        ok = sum(v == "exported" for v in results.values())
        errors = "; ".join(f"{i}: {v}" for i, v in results.items() if v != "exported")
        return RedirectResponse(with_msg(f"/queue?{urlencode(flt)}", f"approved {ok} of {len(ids)}" +
                                         (f" ({errors})" if errors else "")), status_code=303)

    return app


@lru_cache(maxsize=32)
def overlay_png(path: Location, version: str, name: str) -> bytes:
    """One plane of the preview overlay as a tinted RGBA PNG to lay over before/after."""
    planes = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(np.float32) / 255
    if name == "mask":        # the cut-out: piece tinted blue
        v = planes[..., 2]
        rgba = np.stack([np.zeros_like(v), np.full_like(v, 0.55), np.ones_like(v), 0.45 * v], -1)
    elif name == "defects":   # what dust removal touched, grown so a 2 px speck shows
        v = np.asarray(Image.fromarray((planes[..., 0] * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(5)),
                       np.float32) / 255
        rgba = np.stack([np.ones_like(v), np.full_like(v, 0.1), np.full_like(v, 0.1), 0.9 * v], -1)
    else:                     # detail loss: yellow -> red heat map
        v = np.clip(planes[..., 1], 0, 1)
        rgba = np.stack([np.ones_like(v), 1 - v, np.zeros_like(v), np.clip(1.5 * v, 0, 0.85)], -1)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def serve(state: Path | str, out: Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          allowed_hosts: list[str] | None = None, **options) -> None:
    """Run the app with uvicorn (blocking). ``allowed_hosts``: default ``default_hosts(host, $LOUPE_REVIEW_HOSTS)``."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to listen on {host} without a token: set LOUPE_REVIEW_TOKEN or pass --token")
    if allowed_hosts is None:
        extra = os.environ.get("LOUPE_REVIEW_HOSTS", "")
        allowed_hosts = default_hosts(host, extra)
        if not extra.strip() and host in ("0.0.0.0", "::"):
            print(f"note: only requests for Host {host} are answered; list the names and addresses reviewers "
                  "use in LOUPE_REVIEW_HOSTS (comma separated)", file=sys.stderr)
    uvicorn.run(create_app(state, out, token=token, allowed_hosts=allowed_hosts, **options), host=host, port=port,
                log_level="warning")
