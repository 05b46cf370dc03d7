"""The wide studio world (``render_scene(..., world="wide")``): more backdrops, light and cameras.

Everything here is opt-in: the default world never calls into this module, so its
seeded stream is untouched.  A wide scene draws its studio from a *child* generator
of the image's generator (:func:`child_rng`), its piece from the image's generator.

What the wide world adds (all recorded in ``meta["studio"]``):

* backdrops: the four default ones plus ``beige_paper``, ``kraft_paper`` (fibres),
  ``light_box`` (near-blown white, lit from behind) and ``acrylic`` (a clear riser on
  another backdrop, with the piece's mirror reflection below it -- NOT piece);
* sweep light: strong fall-off (the bottom or top of the frame darker), side
  gradients, the sweep's horizon band, paper seams, a hot spot;
* white metal on white: polished faces mirror the backdrop (``light["mirror"]``),
  stronger speculars (``light["spec_gain"]``);
* shadows: none, soft, hard (sharp, offset away from the key) or both -- alpha 0;
* pieces: an openwork ``pendant`` (round holes, slots, a lattice or petals: large
  openings with a wire's width of metal between them) on a bail (eyelet hole) with a
  jump ring, often on a chain; chains are drawn more often, in every metal, on every backdrop;
* camera (source only, after the defects): lens vignetting, depth of field, exposure
  push (blown highlights), ISO noise (100-6400, with chroma blotches), JPEG at
  quality 30-95 for 55% of the shots: ``source`` carries it (a JPEG file of the shot),
  ``layers["sensor"]`` the image without it, which a raw file or a TIFF holds
  (``Scene.as_written``).

``clean`` stays the neutral, even-light render of piece + backdrop (the backdrop's own
fall-off, seams, shadows and reflections are part of it); ``alpha`` is the piece only.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

WORLDS = ("default", "wide")
WIDE_BACKDROPS = {"white_sweep": 0.17, "grey_sweep": 0.07, "colored_paper": 0.11, "textured_desk": 0.06,
                  "beige_paper": 0.13, "kraft_paper": 0.11, "light_box": 0.15, "acrylic": 0.20}
WIDE_PIECES = {"band": 0.14, "solitaire": 0.13, "pave": 0.11, "chain": 0.26, "earring": 0.14, "pendant": 0.22}
BRIGHT = ("white_sweep", "light_box", "beige_paper")
ACRYLIC_UNDER = ("white_sweep", "white_sweep", "grey_sweep", "beige_paper", "colored_paper", "light_box")
ISOS = (100, 200, 400, 800, 1600, 3200, 6400)


def child_rng(rng: np.random.Generator) -> np.random.Generator:
    """The studio's generator: a child of the image's (does not advance its stream)."""
    return rng.spawn(1)[0]


def _pick(rng, table: dict, forced, name):
    if forced is not None:
        if forced not in table:
            raise ValueError(f"unknown {name} {forced!r}; choose from {sorted(table)}")
        return forced
    keys = list(table)
    p = np.array([table[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def plan(rng, *, piece=None, metal=None, background=None, metals=()) -> dict:
    """Backdrop, piece, metal and shadow style of one wide scene."""
    back = _pick(rng, WIDE_BACKDROPS, background, "background")
    under = ACRYLIC_UNDER[int(rng.integers(len(ACRYLIC_UNDER)))] if back == "acrylic" else back
    pc = _pick(rng, WIDE_PIECES, piece, "piece")
    if metal is None:
        white = under in BRIGHT and rng.random() < 0.6
        pool = ("white_gold", "silver") if white else tuple(metals)
        metal = pool[int(rng.integers(len(pool)))]
    shadows = ("none", "soft", "soft") if under == "light_box" else ("none", "soft", "hard", "both", "hard")
    return {"backdrop": back, "under": under, "piece": pc, "metal": metal,
            "shadow": shadows[int(rng.integers(len(shadows)))]}


# --------------------------------------------------------------------------------------
# backdrops
# --------------------------------------------------------------------------------------
def _uv(w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (xx + 0.5) / w, (yy + 0.5) / h


def _paper(rng, col, w, h, fibre: float):
    from .scene import _lowfreq_noise

    tex = 1.0 + 0.012 * _lowfreq_noise(rng, h, w, 40, 2)
    if fibre > 0:  # kraft: speckle + short dark fibres
        sp = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7)
        tex = tex + fibre * sp
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(w * h // 3000, w * h // 1200 + 2))):
            x, y, a = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi)
            L = rng.uniform(2, 9)
            cv2.line(m, (int(x), int(y)), (int(x + L * math.cos(a)), int(y + L * math.sin(a))), 255, 1, cv2.LINE_AA)
        tex = tex * (1 - rng.uniform(0.08, 0.2) * m.astype(np.float32) / 255)
    return col[None, None, :] * tex[..., None]


def backdrop(rng, kind: str, w: int, h: int):
    """Flat backdrop of a wide kind (before the sweep light). Returns (linear RGB, meta)."""
    from .scene import _hsv_to_lin, render_background

    if kind in ("white_sweep", "grey_sweep", "textured_desk"):
        return render_background(rng, kind, w, h)
    meta = {"kind": kind}
    if kind == "colored_paper":
        col = _hsv_to_lin(rng.uniform(0, 360), rng.uniform(0.2, 0.75), rng.uniform(0.35, 0.92))
        bg = _paper(rng, col, w, h, 0.0)
    elif kind == "beige_paper":
        col = _hsv_to_lin(rng.uniform(25, 48), rng.uniform(0.1, 0.3), rng.uniform(0.72, 0.93))
        bg = _paper(rng, col, w, h, 0.006)
    elif kind == "kraft_paper":
        col = _hsv_to_lin(rng.uniform(20, 34), rng.uniform(0.35, 0.62), rng.uniform(0.45, 0.72))
        bg = _paper(rng, col, w, h, rng.uniform(0.02, 0.05))
    elif kind == "light_box":
        u, v = _uv(w, h)
        lvl = rng.uniform(0.9, 1.0)
        hot = 1 + rng.uniform(0.0, 0.06) * np.exp(-((u - rng.uniform(0.3, 0.7)) ** 2 + (v - 0.5) ** 2) / 0.15)
        col = np.array([1.0, 1.0, rng.uniform(0.97, 1.03)], np.float32) * lvl
        bg = col[None, None, :] * hot[..., None]
    else:
        raise ValueError(f"unknown wide backdrop {kind!r}")
    meta["color"] = [float(c) for c in col]
    return np.clip(bg, 0, 1).astype(np.float32), meta


def sweep_light(rng, bg: np.ndarray, kind: str):
    """Fall-off, gradients, horizon band, seams and a hot spot on a sweep or paper."""
    h, w = bg.shape[:2]
    u, v = _uv(w, h)
    m = {}
    if kind == "light_box":
        return bg, m
    f = rng.uniform(0.15, 0.55)
    bottom = rng.random() < 0.7  # usually the floor in front falls off: darker bottom of the frame
    t = v if bottom else 1 - v
    v0 = rng.uniform(0.2, 0.6)
    gain = 1 - f * ((np.clip(t - v0, 0, None) / (1 - v0)) ** rng.uniform(1.0, 2.0))
    gain = gain * (1 + rng.uniform(-0.3, 0.3) * (u - 0.5))
    m.update(falloff=float(f), falloff_side="bottom" if bottom else "top")
    if rng.random() < 0.4:  # hot spot of the key on the sweep
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.5)
        gain = gain * (1 + rng.uniform(0.05, 0.25) * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (r * r)))
        m["hot_spot"] = [float(cx), float(cy)]
    if kind != "textured_desk" and rng.random() < 0.4:  # horizon: where the wall curves into the floor
        y = rng.uniform(0.12, 0.45)
        band = 1 / (1 + np.exp(-(v - y) / rng.uniform(0.01, 0.05)))
        gain = gain * (1 + rng.uniform(-0.3, 0.2) * (1 - band))
        m["horizon"] = float(y)
    if kind != "textured_desk" and rng.random() < 0.25:  # paper seam: two sheets meet
        pos = rng.uniform(0.1, 0.9)
        d = np.abs((u if rng.random() < 0.5 else v) - pos) * max(w, h)
        gain = gain * (1 + rng.uniform(-0.25, 0.15) * np.exp(-(d / rng.uniform(0.5, 1.5)) ** 2))
        m["seam"] = float(pos)
    return np.clip(bg * gain[..., None], 0, 1).astype(np.float32), m


def mirror_light(rng, light: dict, bg: np.ndarray, box, ss: int, metal: str, under: str) -> dict:
    """Add the wide keys to the studio light: backdrop mirrored in polished metal, specular gain."""
    h, w = bg.shape[:2]
    x0, y0, x1, y1 = (int(b / ss) for b in box)
    pad = max(4, (x1 - x0) // 3)
    reg = bg[max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)]
    col = reg.reshape(-1, 3).mean(0) if reg.size else bg.reshape(-1, 3).mean(0)
    white = metal in ("white_gold", "silver") and under in BRIGHT
    mix = rng.uniform(0.45, 0.85) if white else rng.uniform(0.1, 0.45)
    light = dict(light)
    light["mirror"] = {"color": [float(c) for c in col], "mix": float(mix)}
    light["spec_gain"] = float(rng.uniform(1.0, 2.5))
    return light


def mirror_shade(col, rx, ry, rz, ck, base, light):
    """Blend the mirrored backdrop into metal colour (faces that do not see the key)."""
    from .scene import _smoothstep

    m = light["mirror"]
    ks = light["key_size"]
    see = (1 - _smoothstep(ks - 0.1, ks + 0.1, ck)) * _smoothstep(-0.5, 0.3, rz)
    wgt = (m["mix"] * see)[..., None]
    refl = np.asarray(m["color"], np.float32)[None, :] * (0.7 + 0.3 * np.asarray(base, np.float32))[None, :]
    return col * (1 - wgt) + refl * wgt


# --------------------------------------------------------------------------------------
# shadows and the acrylic riser (drawn into the backdrop: alpha stays 0 there)
# --------------------------------------------------------------------------------------
def _shift(img, dx, dy, scale=1.0, center=(0.0, 0.0)):
    h, w = img.shape[:2]
    M = np.array([[scale, 0, (1 - scale) * center[0] + dx], [0, scale, (1 - scale) * center[1] + dy]], np.float32)
    return cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def shadows(rng, bg, alpha, light, style: str):
    """Soft and/or hard cast shadows of the piece on the backdrop. Returns (bg, shadow map, meta)."""
    h, w = alpha.shape
    L = max(w, h)
    k = light["key_dir"]
    d = np.array([-k[0], -k[1]], np.float64)
    d = d / (np.linalg.norm(d) + 1e-6)
    d[1] = abs(d[1]) if rng.random() < 0.8 else d[1]  # mostly thrown down/forward
    ys, xs = np.nonzero(alpha > 0.5)
    c = (float(xs.mean()), float(ys.max())) if len(xs) else (w / 2, h / 2)
    dark = np.zeros((h, w), np.float32)
    meta = {"style": style}
    if style in ("soft", "both"):
        off = rng.uniform(0.005, 0.03) * L
        sh = cv2.GaussianBlur(_shift(alpha, d[0] * off, d[1] * off), (0, 0), rng.uniform(0.008, 0.035) * L)
        s = rng.uniform(0.2, 0.5)
        dark = np.maximum(dark, s * np.clip(sh * 1.3, 0, 1))
        meta["soft"] = float(s)
    if style in ("hard", "both"):
        off = rng.uniform(0.015, 0.08) * L
        sh = _shift(alpha, d[0] * off, d[1] * off, rng.uniform(0.97, 1.1), c)
        sh = cv2.GaussianBlur(sh, (0, 0), rng.uniform(0.4, 1.5) * L / 1536 * 2 + 0.3)
        s = rng.uniform(0.3, 0.65)
        dark = np.maximum(dark, s * np.clip(sh, 0, 1))
        meta.update(hard=float(s), hard_offset_px=[float(d[0] * off), float(d[1] * off)])
    return (bg * (1 - dark)[..., None]).astype(np.float32), dark, meta


def adjust_box(box, backdrop_kind: str, w2: int, h2: int):
    """On an acrylic riser the piece stands in the upper part: room for its reflection."""
    if backdrop_kind != "acrylic":
        return box
    x0, y0, x1, y1 = box
    bh = y1 - y0
    s = min(1.0, 0.56 * h2 / bh)
    cx = (x0 + x1) / 2
    bw, bh = (x1 - x0) * s, bh * s
    ny0 = 0.05 * h2 + (0.6 * h2 - bh) * 0.3
    return (cx - bw / 2, ny0, cx + bw / 2, ny0 + bh)


def acrylic(rng, bg, colour, alpha):
    """Clear riser under the piece: edges, tint and the piece's mirror reflection (background)."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.3)
    if not len(ys):
        return bg, np.zeros((h, w), np.float32), {}
    yc = int(ys.max()) + int(rng.integers(0, 2))
    span = xs.max() - xs.min()
    bx0 = int(max(0, xs.min() - rng.uniform(0.1, 0.8) * span))
    bx1 = int(min(w, xs.max() + rng.uniform(0.1, 0.8) * span))
    by1 = int(min(h, yc + rng.uniform(0.25, 0.6) * h))
    out = bg.copy()
    face = out[yc:by1, bx0:bx1]
    tint = np.array([rng.uniform(0.9, 0.98), rng.uniform(0.95, 1.0), rng.uniform(0.95, 1.0)], np.float32)
    face[:] = face * tint * rng.uniform(0.9, 1.03)
    # reflection: rows below the contact line mirror the piece's rows above it
    n = by1 - yc
    src = np.clip(2 * yc - np.arange(yc, by1), 0, h - 1)
    r0, fade = rng.uniform(0.25, 0.6), rng.uniform(0.15, 0.6) * max(1, ys.max() - ys.min())
    r = (r0 * np.exp(-np.arange(n) / fade)).astype(np.float32)[:, None]
    ra = alpha[src, bx0:bx1] * r
    rc = colour[src, bx0:bx1] * r[..., None]
    sig = rng.uniform(0.0, 1.2)
    if sig > 0.3:
        ra, rc = cv2.GaussianBlur(ra, (0, 0), sig), cv2.GaussianBlur(rc, (0, 0), sig)
    face[:] = face * (1 - ra[..., None]) + rc
    refl = np.zeros((h, w), np.float32)
    refl[yc:by1, bx0:bx1] = ra
    # riser edges: a bright top edge line and darker/brighter side and bottom edges
    out[yc, bx0:bx1] = np.clip(out[yc, bx0:bx1] * (1 + rng.uniform(0.1, 0.4)), 0, 1)
    for x in (bx0, bx1 - 1):
        out[yc:by1, x] *= rng.uniform(0.75, 1.2)
    if by1 < h:
        out[by1 - 1, bx0:bx1] *= rng.uniform(0.7, 0.95)
    meta = {"top_y": int(yc), "x": [bx0, bx1], "bottom_y": int(by1), "reflection": float(r0)}
    return np.clip(out, 0, 1).astype(np.float32), refl, meta


# --------------------------------------------------------------------------------------
# camera (source only)
# --------------------------------------------------------------------------------------
def camera(rng, src: np.ndarray, alpha: np.ndarray, backdrop_kind: str, settings: dict | None = None):
    """Lens vignetting, depth of field, exposure push and ISO noise on the source, and the JPEG quality a
    JPEG file of it has (``meta["jpeg_quality"]``, applied by the caller: ``jpeg``).

    ``settings``: the returned meta of an earlier call: the same camera (focus, vignette, push, ISO,
    JPEG quality) again, only the noise drawn anew from ``rng`` (a clean plate of the same set-up)."""
    h, w = alpha.shape
    s = max(w, h) / 1536
    u, v = _uv(w, h)
    meta = {}
    img = src
    if (rng.random() < 0.5) if settings is None else "dof_sigma_px" in settings:
        # depth of field: backdrop away from the piece's plane blurs
        ys = np.nonzero(alpha > 0.5)[0]
        yf = ys.mean() / h if len(ys) else 0.5
        sig = rng.uniform(1.5, 8.0) * s + 0.3 if settings is None else settings["dof_sigma_px"]
        depth = rng.uniform(0.25, 0.6) if settings is None else settings["dof_depth"]
        far = np.clip(np.abs(v - yf) / depth, 0, 1)
        near = cv2.dilate((alpha > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
        wt = (far * (1 - cv2.GaussianBlur(near, (0, 0), 2.0)))[..., None]
        img = img * (1 - wt) + cv2.GaussianBlur(img, (0, 0), sig) * wt
        meta.update(dof_sigma_px=float(sig), dof_depth=float(depth))
    if (rng.random() < 0.25) if settings is None else "defocus_sigma_px" in settings:
        # slight focus miss over the whole frame
        sig = rng.uniform(0.6, 2.0) * s + 0.2 if settings is None else settings["defocus_sigma_px"]
        img = cv2.GaussianBlur(img, (0, 0), sig)
        meta["defocus_sigma_px"] = float(sig)
    vig = rng.uniform(0.0, 0.45) if settings is None else settings["vignette"]
    r2 = ((u - 0.5) ** 2 + (v - 0.5) ** 2 * (h / w) ** 2) / 0.25
    img = img * (1 - vig * r2)[..., None]
    if settings is not None:
        push = settings["exposure_push"]
    else:
        push = rng.uniform(1.05, 1.3) if backdrop_kind == "light_box" else (
            rng.uniform(1.0, 1.35) if rng.random() < 0.45 else 1.0)
    img = img * push
    iso = int(ISOS[int(rng.integers(len(ISOS)))]) if settings is None else settings["iso"]
    g = iso / 100
    sigma = np.sqrt(0.00012 * g * np.clip(img, 0, 1) + (0.0008 * g ** 0.8) ** 2).astype(np.float32)
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    if iso >= 1600:  # chroma blotches
        cb = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), 1.5)
        img = img + cb * 0.0015 * g ** 0.6 * np.sqrt(np.clip(img, 0.01, 1))
    img = np.clip(img, 0, 1).astype(np.float32)
    meta.update(vignette=float(vig), exposure_push=float(push), iso=iso)
    if (rng.random() < 0.55) if settings is None else "jpeg_quality" in settings:
        # the camera's JPEG: what a JPEG file of the shot carries (``jpeg``); a raw file has none
        meta["jpeg_quality"] = int(rng.integers(30, 96)) if settings is None else settings["jpeg_quality"]
    return img, meta


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Linear ``img`` through an 8-bit sRGB JPEG at ``quality`` and back."""
    from .scene import linear_to_srgb, srgb_to_linear

    enc = np.round(linear_to_srgb(img) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", enc[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    return srgb_to_linear(dec).astype(np.float32)


# --------------------------------------------------------------------------------------
# the openwork pendant on a bail
# --------------------------------------------------------------------------------------
def _openwork(rng, h, w, cx, cy, rx, ry):
    """Holes of a pierced plate: a ring of round holes, radial slots, a lattice, or petals (large
    oval openings around the centre, only a wire's width of metal between them: the wirework whose
    openings lie in the piece's own shadow)."""
    from .scene import _ellipse_cov, _stroke_cov

    style = int(rng.choice(4, p=[0.2, 0.2, 0.2, 0.4]))
    holes = np.zeros((h, w), np.float32)
    if style == 0:
        n = int(rng.integers(5, 10))
        rr = min(rx, ry) * rng.uniform(0.1, 0.17)
        for k in range(n):
            a = 2 * np.pi * k / n
            holes = np.maximum(holes, _ellipse_cov(h, w, cx + 0.58 * rx * math.cos(a), cy + 0.58 * ry * math.sin(a),
                                                   rr, rr))
        if rng.random() < 0.6:
            holes = np.maximum(holes, _ellipse_cov(h, w, cx, cy, rr * 1.3, rr * 1.3))
    elif style == 1:
        n = int(rng.integers(4, 9))
        wd = min(rx, ry) * rng.uniform(0.1, 0.16)
        for k in range(n):
            a = 2 * np.pi * (k + 0.5) / n
            p0 = (cx + 0.3 * rx * math.cos(a), cy + 0.3 * ry * math.sin(a))
            p1 = (cx + 0.72 * rx * math.cos(a), cy + 0.72 * ry * math.sin(a))
            holes = np.maximum(holes, _stroke_cov(h, w, [p0, p1], wd))
    elif style == 3:
        n = int(rng.integers(4, 8))
        r = min(rx, ry)
        gap = r * rng.uniform(0.05, 0.1)           # the wire left between two petals
        radial = r * rng.uniform(0.28, 0.36)
        across = max(r * 0.08, r * 0.5 * math.sin(math.pi / n) - gap / 2)
        for k in range(n):
            a = 2 * np.pi * (k + 0.5 * (n % 2)) / n
            holes = np.maximum(holes, _ellipse_cov(h, w, cx + 0.52 * rx * math.cos(a), cy + 0.52 * ry * math.sin(a),
                                                   radial, across, math.degrees(a)))
    else:
        p = min(rx, ry) * rng.uniform(0.28, 0.4)
        wire = p * rng.uniform(0.22, 0.35)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = ((xx - cx) + (yy - cy)) / p
        b = ((xx - cx) - (yy - cy)) / p
        da = np.abs(a - np.round(a)) * p / math.sqrt(2) * 2
        db = np.abs(b - np.round(b)) * p / math.sqrt(2) * 2
        holes = np.clip(np.minimum(da, db) - wire / 2 + 0.5, 0, 1)
        inner = _ellipse_cov(h, w, cx, cy, rx * 0.74, ry * 0.74)
        holes = holes * inner
    return holes.astype(np.float32), ["holes", "slots", "lattice", "petals"][style]


def draw_pendant(canvas, rng, metal, stone, box, view):
    """Openwork plate (true holes) hanging from a bail with an eyelet, often on a chain."""
    from .scene import (METALS, SS, _ellipse_cov, _ring_cov, _stroke_cov, _teardrop, draw_stone, metal_layer)

    base = METALS[metal]
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    rx = min(bw * 0.36, bh * 0.3)
    ry = rx * rng.uniform(0.9, 1.25)
    cx, cy = (bx0 + bx1) / 2, by1 - ry - 3
    x0, y0 = int(cx - rx) - 4, int(cy - ry) - 4
    w, h = int(2 * rx) + 10, int(2 * ry) + 10
    shape = int(rng.integers(3))
    if shape == 0:
        body = _ellipse_cov(h, w, cx - x0, cy - y0, rx, ry)
    elif shape == 1:
        from .scene import _mask_aa, _poly

        body = _mask_aa(h, w, lambda m: _poly(m, _teardrop(cx, cy, rx, ry, 96)[:, ::1] - [x0, y0]))
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        q = np.maximum(np.abs(xx + 0.5 - (cx - x0)) / rx, np.abs(yy + 0.5 - (cy - y0)) / ry)
        body = np.clip((1 - q) * min(rx, ry) + 0.5, 0, 1).astype(np.float32)
    holes, style = _openwork(rng, h, w, cx - x0, cy - y0, rx, ry)
    cov = np.clip(body - holes, 0, 1)
    metal_layer(canvas, x0, y0, cov, base, radius=min(rx, ry) * 0.12, blur=0.8)
    if stone is not None and style != "lattice":
        sr = min(rx, ry) * 0.2
        draw_stone(canvas, rng, stone, cx, cy, sr, sr, cut="round")
    # bail: a vertical loop above the plate (the eyelet stays open), jump ring between
    wire = max(2.2 * SS, rx * 0.07)
    jr = max(3.0 * SS, rx * 0.11)
    jy = cy - ry - jr * 0.6
    s = int(4 * jr) + 8
    lx0, ly0 = int(cx - s / 2), int(jy - s / 2)
    ring = _ring_cov(s, s, cx - lx0, jy - ly0, jr, jr, 0, wire)
    metal_layer(canvas, lx0, ly0, ring, base, radius=wire / 2, blur=0.6, metal_w=0.0)
    ba, bb = jr * rng.uniform(0.8, 1.1), jr * rng.uniform(1.4, 2.0)
    by = jy - jr - bb + wire
    s2 = int(2 * bb + 4 * wire) + 8
    lx0, ly0 = int(cx - s2 / 2), int(by - s2 / 2)
    bail = _ring_cov(s2, s2, cx - lx0, by - ly0, ba, bb, 0, wire * 1.3)
    metal_layer(canvas, lx0, ly0, bail, base, radius=wire * 0.65, blur=0.6, metal_w=1.0)
    chain = None
    if rng.random() < 0.65:  # chain through the bail, up to the frame top
        top = by - bb
        spread = rng.uniform(0.25, 0.9) * bw
        pts = [np.array([cx - spread, by0 - 0.3 * bh]), np.array([cx, top]), np.array([cx + spread, by0 - 0.3 * bh])]
        chain = links(canvas, rng, base, pts)
    return {"pendant_shape": ["disc", "drop", "square"][shape], "openwork": style, "chain_links": chain}


def links(canvas, rng, base, pts):
    """Alternating flat (open) and edge-on links along a polyline."""
    from .scene import DETAIL_CHAIN, SS, _ellipse_sd, metal_layer

    wire = rng.uniform(2.0, 3.2) * SS
    llen = rng.uniform(5.0, 7.0) * wire
    lwid = llen * rng.uniform(0.62, 0.75)
    pitch = llen / 2 + rng.uniform(0.4, 1.0) * wire
    R = wire / 2
    k = 0
    for p0, p1 in zip(pts[:-1], pts[1:]):
        L = float(np.hypot(*(p1 - p0)))
        ang = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
        for t in np.arange(0, L, pitch):
            cx, cy = p0 + (p1 - p0) * (t / max(L, 1e-6))
            r = int(llen / 2 + wire + 4)
            x0, y0 = int(cx) - r, int(cy) - r
            a = llen / 2 - R
            if k % 2 == 0:
                d = np.abs(_ellipse_sd(2 * r, 2 * r, cx - x0, cy - y0, a, lwid / 2 - R, ang))
                cov = np.clip(R + 0.5 - d, 0, 1).astype(np.float32)
                hgt = np.sqrt(np.clip(R * R - d * d, 0, None))
            else:
                sd = _ellipse_sd(2 * r, 2 * r, cx - x0, cy - y0, a + R, R * 1.1, ang)
                cov = np.clip(0.5 - sd, 0, 1).astype(np.float32)
                hgt = R * np.sqrt(np.clip(1 - (1 - np.clip(-sd, 0, R) / R) ** 2, 0, 1))
            metal_layer(canvas, x0, y0, cov, base, height=hgt.astype(np.float32), label=DETAIL_CHAIN,
                        label_mask=cov > 0.5, metal_w=0.0, gloss=1.2)
            k += 1
    return k
