"""Procedural jewelry scenes: pieces, metals, stones, backgrounds and lighting.

Everything is rendered in float32 *linear* RGB (sRGB primaries, D65 white).
Pieces are drawn at 2x supersampling into a premultiplied layer stack and
area-downsampled, so the alpha matte and every edge carry fractional
coverage.  Backgrounds are rendered directly at 1x (they are smooth).

The entry point is :func:`render_scene` (pure: its only source of
randomness is the ``numpy.random.Generator`` passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

PIECES = ("band", "solitaire", "pave", "chain", "earring")
BACKGROUNDS = ("white_sweep", "grey_sweep", "colored_paper", "textured_desk")
METALS = {
    "yellow_gold": (0.90, 0.62, 0.25),
    "rose_gold": (0.88, 0.55, 0.45),
    "white_gold": (0.78, 0.78, 0.76),
    "silver": (0.92, 0.92, 0.92),
}
# body colour (linear) of each stone, and how much white the facets carry
STONES = {
    "diamond": (0.92, 0.93, 0.95),
    "sapphire": (0.04, 0.10, 0.55),
    "ruby": (0.62, 0.02, 0.06),
    "emerald": (0.02, 0.38, 0.12),
}
VIEWS = ("front", "top", "side", "detail")
SKU_LETTER = {"band": "R", "solitaire": "S", "pave": "P", "chain": "C", "earring": "E", "pendant": "D"}

# detail labels (details.png)
DETAIL_PAVE, DETAIL_MILGRAIN, DETAIL_ENGRAVING, DETAIL_PRONG, DETAIL_CHAIN = 1, 2, 3, 4, 5
DETAIL_NAMES = {1: "pave_stone", 2: "milgrain_bead", 3: "engraved_line", 4: "prong_tip", 5: "chain_wire"}

SS = 2  # supersampling factor


# --------------------------------------------------------------------------------------
# data containers
# --------------------------------------------------------------------------------------
@dataclass
class Scene:
    """One rendered image with its ground truth (all arrays at output resolution).

    source:  float32 HxWx3 linear RGB as the camera saw it (cast, uneven light,
             defects, noise) -- this is what the writers encode.
    clean:   float32 HxWx3 linear RGB, neutral D65, even light, no defects, no noise.
    alpha:   float32 HxW piece matte in [0, 1] (holes are 0).
    defects: uint8 HxW label mask (0 none, 1 dust, 2 lint, 3 scratch, 4 fingerprint).
    details: uint8 HxW label mask (1 pave, 2 milgrain, 3 engraving, 4 prong tip, 5 chain wire).
    metal:   float32 HxW visible polished-metal weight (helper, not written).
    meta:    dict (piece, metal, stone, background, illuminant, lighting, defects, ...).
    """

    source: np.ndarray
    clean: np.ndarray
    alpha: np.ndarray
    defects: np.ndarray
    details: np.ndarray
    metal: np.ndarray
    meta: dict = field(default_factory=dict)
    # wide world: "shadow", "reflection" (HxW float32), "plate" and, where the camera compressed,
    # "sensor" / "plate_sensor" (the images before its JPEG: ``as_written``)
    layers: dict = field(default_factory=dict)

    def as_written(self, fmt: str, plate: bool = False) -> np.ndarray:
        """The pixels a ``fmt`` file of the shot (or of its clean plate) holds: in the wide world a
        JPEG carries the camera's compression (``source``, ``layers["plate"]``), a raw file or a TIFF
        the sensor's image without it (``layers["sensor"]``, ``layers["plate_sensor"]``, where the
        camera compressed)."""
        shot = self.layers["plate"] if plate else self.source
        sensor = self.layers.get("plate_sensor" if plate else "sensor")
        return shot if fmt == "jpg" or sensor is None else sensor


class Canvas:
    """Premultiplied piece layer stack at supersampled resolution."""

    def __init__(self, h: int, w: int, light: dict):
        self.h, self.w = h, w
        self.color = np.zeros((h, w, 3), np.float32)  # premultiplied
        self.alpha = np.zeros((h, w), np.float32)
        self.metal = np.zeros((h, w), np.float32)  # premultiplied "polished metal" weight
        self.labels = np.zeros((h, w), np.uint8)
        self.light = light

    def over(self, x0: int, y0: int, rgb: np.ndarray, cov: np.ndarray, *, metal: float | np.ndarray = 0.0,
             label: int = 0, label_mask: np.ndarray | None = None) -> None:
        """Composite a layer (straight colour ``rgb`` with coverage ``cov``) at (x0, y0)."""
        hh, ww = cov.shape
        # clip to canvas
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1, sy1 = min(ww, self.w - x0), min(hh, self.h - y0)
        if sx1 <= sx0 or sy1 <= sy0:
            return
        cov = cov[sy0:sy1, sx0:sx1]
        rgb = rgb[sy0:sy1, sx0:sx1]
        ys, xs = slice(y0 + sy0, y0 + sy1), slice(x0 + sx0, x0 + sx1)
        inv = 1.0 - cov
        self.color[ys, xs] = rgb * cov[..., None] + self.color[ys, xs] * inv[..., None]
        self.alpha[ys, xs] = cov + self.alpha[ys, xs] * inv
        if isinstance(metal, np.ndarray):
            metal = metal[sy0:sy1, sx0:sx1]
        self.metal[ys, xs] = metal * cov + self.metal[ys, xs] * inv
        lab = self.labels[ys, xs]
        lab[cov > 0.5] = 0
        if label and label_mask is not None:
            lab[label_mask[sy0:sy1, sx0:sx1]] = label


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _down(img: np.ndarray, f: int = SS) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (w // f, h // f), interpolation=cv2.INTER_AREA)


def _mask_aa(h: int, w: int, draw) -> np.ndarray:
    """Rasterise with OpenCV anti-aliasing into a float coverage map."""
    m = np.zeros((h, w), np.uint8)
    draw(m)
    return m.astype(np.float32) * (1.0 / 255.0)


_SHIFT = 4
_SC = 1 << _SHIFT


def _pt(x, y):
    return (int(round(x * _SC)), int(round(y * _SC)))


def _ellipse(m, cx, cy, a, b, ang=0.0, thick=-1, color=255):
    cv2.ellipse(m, _pt(cx, cy), (max(1, int(round(a * _SC))), max(1, int(round(b * _SC)))), ang, 0, 360,
                color, thick, cv2.LINE_AA, _SHIFT)


def _poly(m, pts, color=255):
    p = np.round(np.asarray(pts, np.float64) * _SC).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(m, [p], color, cv2.LINE_AA, _SHIFT)


def _polyline(m, pts, thick, color=255, closed=False):
    p = np.round(np.asarray(pts, np.float64) * _SC).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(m, [p], closed, color, max(1, int(round(thick))), cv2.LINE_AA, _SHIFT)


def _grid(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + 0.5, yy + 0.5  # pixel centres


def _ellipse_sd(h, w, cx, cy, a, b, ang=0.0):
    """Approximate signed distance (px) to an ellipse; negative inside."""
    xx, yy = _grid(h, w)
    c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    dx, dy = xx - cx, yy - cy
    u, v = dx * c + dy * s, -dx * s + dy * c
    a, b = max(a, 1e-3), max(b, 1e-3)
    f = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    g = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return np.where(f > 1e-6, (f - 1.0) * f / np.maximum(g, 1e-9), -min(a, b))


def _ellipse_cov(h, w, cx, cy, a, b, ang=0.0):
    """Anti-aliased filled ellipse (exact size, unlike cv2's AA fill which grows ~0.75 px)."""
    return np.clip(0.5 - _ellipse_sd(h, w, cx, cy, a, b, ang), 0, 1).astype(np.float32)


def _ring_cov(h, w, cx, cy, a, b, ang, thick):
    """Elliptical ring whose wire is ``thick`` px wide (centre line semi-axes a, b)."""
    outer = _ellipse_cov(h, w, cx, cy, a + thick / 2, b + thick / 2, ang)
    if a - thick / 2 <= 0.5 or b - thick / 2 <= 0.5:
        return outer
    inner = _ellipse_cov(h, w, cx, cy, a - thick / 2, b - thick / 2, ang)
    return np.clip(outer - inner, 0, 1)


def _stroke_cov(h, w, pts, width, closed=False):
    """Anti-aliased polyline of exact ``width`` (distance-to-segments rasteriser)."""
    pts = np.asarray(pts, np.float32)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    xx, yy = _grid(h, w)
    d2 = np.full((h, w), np.inf, np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        lo_x, hi_x = int(max(0, min(x0, x1) - width - 2)), int(min(w, max(x0, x1) + width + 3))
        lo_y, hi_y = int(max(0, min(y0, y1) - width - 2)), int(min(h, max(y0, y1) + width + 3))
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        px, py = xx[lo_y:hi_y, lo_x:hi_x] - x0, yy[lo_y:hi_y, lo_x:hi_x] - y0
        vx, vy = x1 - x0, y1 - y0
        L2 = max(vx * vx + vy * vy, 1e-9)
        t = np.clip((px * vx + py * vy) / L2, 0, 1)
        dd = (px - t * vx) ** 2 + (py - t * vy) ** 2
        np.minimum(d2[lo_y:hi_y, lo_x:hi_x], dd, out=d2[lo_y:hi_y, lo_x:hi_x])
    return np.clip(width / 2 + 0.5 - np.sqrt(d2), 0, 1).astype(np.float32)


def _tube_height(cov: np.ndarray, radius: float | None = None, blur: float = 1.0) -> np.ndarray:
    """Rounded height profile from the distance to the shape edge (pixels)."""
    m = (cov > 0.5).astype(np.uint8)
    d = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if radius is None:
        radius = max(1.0, float(d.max()))
    t = np.minimum(d / radius, 1.0)
    h = radius * np.sqrt(np.clip(1.0 - (1.0 - t) ** 2, 0.0, 1.0))
    if blur > 0:
        h = cv2.GaussianBlur(h, (0, 0), blur)
    return h.astype(np.float32)


# --------------------------------------------------------------------------------------
# shading
# --------------------------------------------------------------------------------------
def make_light(rng: np.random.Generator) -> dict:
    """Studio lighting: a key softbox above, a fill card, a front bounce."""
    ang = rng.uniform(-60, 60)  # key azimuth from straight above (deg, image plane)
    elev = rng.uniform(35, 60)  # elevation of the key above the image plane
    a, e = math.radians(ang), math.radians(elev)
    key = np.array([math.sin(a) * math.cos(e), -math.cos(a) * math.cos(e), math.sin(e)])
    fa = a + math.pi * rng.uniform(0.6, 0.9) * (1 if rng.random() < 0.5 else -1)
    fill = np.array([math.sin(fa) * 0.7, -math.cos(fa) * 0.7, 0.71])
    return {
        "key_dir": [float(v) for v in key / np.linalg.norm(key)],
        "fill_dir": [float(v) for v in fill / np.linalg.norm(fill)],
        "key_size": float(rng.uniform(0.78, 0.88)),  # cos half-angle of softbox
        "fill_level": float(rng.uniform(0.35, 0.6)),
        "ambient": float(rng.uniform(0.3, 0.42)),
    }


def _env(rx, ry, rz, light):
    """Studio environment radiance seen along reflection direction r."""
    k = np.asarray(light["key_dir"], np.float32)
    f = np.asarray(light["fill_dir"], np.float32)
    ck = rx * k[0] + ry * k[1] + rz * k[2]
    cf = rx * f[0] + ry * f[1] + rz * f[2]
    ks = light["key_size"]
    env = light["ambient"] + 0.35 * _smoothstep(-0.4, 0.9, -ry)  # light tent: brighter from above
    env = env + 1.0 * _smoothstep(ks, ks + 0.1, ck)  # key softbox (soft edged)
    env = env + light["fill_level"] * _smoothstep(0.75, 0.9, cf)
    env = env + 0.4 * _smoothstep(0.8, 0.99, rz)  # front bounce card / camera side
    env = env * (0.3 + 0.7 * _smoothstep(-0.1, 0.3, rz))  # dark table/horizon at grazing
    return env, ck


def shade_metal(base, nx, ny, nz, light, gloss: float = 1.0):
    """Metallic shading: coloured environment reflection + sharp speculars."""
    base = np.asarray(base, np.float32)
    rx, ry, rz = 2 * nz * nx, 2 * nz * ny, 2 * nz * nz - 1
    env, ck = _env(rx, ry, rz, light)
    spec = np.power(np.clip(ck, 0, 1), 400.0) * 1.6 * gloss
    if "spec_gain" in light:  # wide world only
        spec = spec * light["spec_gain"]
    # dim reflections are inter-reflections (metal seen in metal): more saturated colour;
    # Fresnel whitening only towards grazing angles
    sat = base[None, :] ** (1.0 + 0.6 * (1.0 - np.clip(env, 0, 1))[..., None])
    tint = np.clip(0.02 + 0.3 * (1 - nz) ** 3, 0, 1)[..., None]
    col = env[..., None] * (sat * (1 - tint) + tint)
    if "mirror" in light:  # wide world only: polished faces mirror the backdrop
        from .studio import mirror_shade

        col = mirror_shade(col, rx, ry, rz, ck, base, light)
    col = col * 0.9 + spec[..., None] * (0.6 * base + 0.4)
    return np.clip(col, 0.0, 1.0).astype(np.float32)


def normals_from_height(h, strength=1.0, base=None):
    gy, gx = np.gradient(h.astype(np.float32))
    nx, ny, nz = -gx * strength, -gy * strength, np.ones_like(h)
    if base is not None:
        bx, by, bz = base
        nx, ny, nz = nx + bx / np.maximum(bz, 0.15), ny + by / np.maximum(bz, 0.15), nz
    n = np.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / n, ny / n, nz / n


def metal_layer(canvas: Canvas, x0, y0, cov, base, *, radius=None, base_normal=None, gloss=1.0,
                blur=1.0, darken=None, label=0, label_mask=None, metal_w=1.0, height=None):
    h = _tube_height(cov, radius, blur) if height is None else height
    nx, ny, nz = normals_from_height(h, 1.0, base_normal)
    idx = cov > 0
    rgb = np.zeros(cov.shape + (3,), np.float32)
    rgb[idx] = shade_metal(base, nx[idx], ny[idx], nz[idx], canvas.light, gloss)
    if darken is not None:
        rgb = rgb * darken[..., None]
    canvas.over(x0, y0, rgb, cov, metal=metal_w, label=label, label_mask=label_mask)
    return rgb


# --------------------------------------------------------------------------------------
# stones
# --------------------------------------------------------------------------------------
def _stone_outline(rng, cut, cx, cy, rx, ry, rot):
    if cut == "round":
        n = 16
        ang = np.arange(n) * 2 * np.pi / n + rot
        return np.stack([cx + rx * np.cos(ang), cy + ry * np.sin(ang)], 1)
    if cut == "oval":
        n = 16
        ang = np.arange(n) * 2 * np.pi / n
        x, y = rx * 1.0 * np.cos(ang), ry * 0.72 * np.sin(ang)
        c, s = math.cos(rot), math.sin(rot)
        return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)
    # cushion / princess: rounded square
    n = 16
    ang = np.arange(n) * 2 * np.pi / n + np.pi / 16
    r = 1.0 / np.maximum(np.abs(np.cos(ang)), np.abs(np.sin(ang))) ** 0.85
    r = r / r.max()
    return np.stack([cx + rx * r * np.cos(ang), cy + ry * r * np.sin(ang)], 1)


def draw_stone(canvas: Canvas, rng, stone: str, cx, cy, rx, ry, cut=None, label=0):
    """Faceted stone: girdle polygon split into crown facets around a table."""
    if cut is None:
        cut = ["round", "round", "oval", "cushion"][int(rng.integers(4))]
    outer = _stone_outline(rng, cut, cx, cy, rx, ry, rng.uniform(0, np.pi / 8))
    center = outer.mean(0)
    table = center + (outer - center) * rng.uniform(0.5, 0.6)
    mid = center + (outer - center) * 0.8
    x0, y0 = int(math.floor(outer[:, 0].min())) - 2, int(math.floor(outer[:, 1].min())) - 2
    x1, y1 = int(math.ceil(outer[:, 0].max())) + 3, int(math.ceil(outer[:, 1].max())) + 3
    h, w = y1 - y0, x1 - x0
    off = np.array([x0, y0], np.float64)
    body = np.asarray(STONES[stone], np.float32)
    white = stone == "diamond"
    rgb = np.zeros((h, w, 3), np.float32)

    def fill_facet(pts, val, tint=None):
        m = _mask_aa(h, w, lambda mm: _poly(mm, pts - off))
        if white:
            disp = np.ones(3, np.float32) if tint is None else tint
            col = np.clip(val * disp, 0, 1.2)
        else:
            # coloured stone: dark body colour, bright facets pick up white light
            col = body * (0.25 + 1.1 * val) + max(0.0, val - 0.75) * 1.2
        rgb[:] = rgb * (1 - m[..., None]) + col * m[..., None]

    n = len(outer)
    for i in range(n):
        j = (i + 1) % n
        tints = None
        if white and rng.random() < 0.3:  # fire / dispersion
            tints = np.array([rng.uniform(0.7, 1.2), rng.uniform(0.8, 1.1), rng.uniform(0.7, 1.3)], np.float32)
        lo, hi = (0.05, 1.0) if white else (0.0, 0.9)
        # crown ring: girdle -> mid -> table, two triangles per trapezoid each
        fill_facet(np.stack([outer[i], outer[j], mid[j]]), rng.uniform(lo, hi), tints)
        fill_facet(np.stack([outer[i], mid[j], mid[i]]), rng.uniform(lo, hi), tints)
        fill_facet(np.stack([mid[i], mid[j], table[j]]), rng.uniform(lo, hi))
        fill_facet(np.stack([mid[i], table[j], table[i]]), rng.uniform(lo, hi))
    # table facet with a soft gradient and a reflected dark pavilion cross
    tm = _mask_aa(h, w, lambda mm: _poly(mm, table - off))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx = (xx + x0 - center[0]) / max(rx, 1)
    gy = (yy + y0 - center[1]) / max(ry, 1)
    tv = 0.55 + 0.35 * gx * rng.uniform(-1, 1) + 0.35 * gy * rng.uniform(-1, 1)
    star = np.exp(-((np.abs(gx) * np.abs(gy)) * 40.0)) * 0.3
    tcol = (np.clip(tv - star, 0.05, 1)[..., None] * (1.0 if white else body * 1.4 + 0.05)).astype(np.float32)
    rgb[:] = rgb * (1 - tm[..., None]) + tcol * tm[..., None]
    # facet edges: thin bright/dark lines
    edges = np.zeros((h, w), np.uint8)
    for i in range(n):
        j = (i + 1) % n
        for a, b in ((outer[i], mid[i]), (mid[i], table[i]), (mid[i], mid[j]), (table[i], table[j])):
            _polyline(edges, np.stack([a, b]) - off, 1)
    e = edges.astype(np.float32) / 255.0 * 0.35
    rgb[:] = rgb * (1 - e[..., None]) + (0.95 if white else 0.6) * e[..., None]
    # sparkles: small stars that clip
    for _ in range(int(rng.integers(2, 6))):
        k = rng.integers(n)
        p = center + (outer[k] - center) * rng.uniform(0.2, 0.85)
        sx, sy = p - off
        sz = max(2.0, min(rx, ry) * rng.uniform(0.08, 0.18))
        d = np.sqrt((xx - sx) ** 2 + (yy - sy) ** 2)
        glow = np.exp(-(d / (sz * 0.35)) ** 2)
        cross = np.exp(-np.abs(xx - sx) / 0.8) * np.exp(-np.abs(yy - sy) / sz) + \
            np.exp(-np.abs(yy - sy) / 0.8) * np.exp(-np.abs(xx - sx) / sz)
        rgb[:] += (glow + 0.6 * cross)[..., None] * 1.2
    cov = _mask_aa(h, w, lambda mm: _poly(mm, outer - off))
    rgb = np.clip(rgb, 0, 1)
    canvas.over(x0, y0, rgb, cov, metal=0.0, label=label, label_mask=(cov > 0.5) if label else None)
    return outer


def draw_pave_stone(canvas: Canvas, rng, stone, cx, cy, r):
    """Tiny pave stone (2-5 px at output size): bright sparkling disc with dark seat."""
    R = r + 2.0
    x0, y0 = int(math.floor(cx - R)), int(math.floor(cy - R))
    s = int(math.ceil(2 * R)) + 2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    dx, dy = xx + x0 + 0.5 - cx, yy + y0 + 0.5 - cy
    d = np.sqrt(dx * dx + dy * dy)
    cov = np.clip(r + 0.5 - d, 0, 1).astype(np.float32)
    body = np.asarray(STONES[stone], np.float32)
    ang = np.arctan2(dy, dx)
    facets = 0.5 + 0.5 * np.cos(8 * ang + rng.uniform(0, 6.3))
    lvl = rng.uniform(0.25, 0.9)
    v = lvl * (0.45 + 0.9 * facets * np.clip(d / max(r, 1), 0, 1))
    if rng.random() < 0.35:  # this one catches the light
        v = v + 2.0 * np.exp(-(d / (0.5 * r)) ** 2)
    v = v * (1 - 0.75 * _smoothstep(0.7 * r, r + 0.3, d))  # dark girdle / seat
    col = v[..., None] * (body if stone != "diamond" else np.ones(3, np.float32))
    if stone != "diamond":
        col = col * 1.3 + np.clip(v - 0.9, 0, 1)[..., None]
    canvas.over(x0, y0, np.clip(col, 0, 1).astype(np.float32), cov, metal=0.0, label=DETAIL_PAVE,
                label_mask=cov > 0.5)


# --------------------------------------------------------------------------------------
# pieces (all coordinates in supersampled pixels)
# --------------------------------------------------------------------------------------
def _ring_geometry(rng, box, view, rim=(0.07, 0.13)):
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    t = {"top": rng.uniform(0.75, 0.92), "side": rng.uniform(0.28, 0.4)}.get(view, rng.uniform(0.42, 0.62))
    a = bw / 2
    b = a * t
    hb = a * rng.uniform(0.12, 0.3) * (1.0 - t) * 1.6  # visible band height
    # fit in box height
    scale = min(1.0, bh / (2 * b + hb))
    a, b, hb = a * scale, b * scale, hb * scale
    cx = (bx0 + bx1) / 2
    cy = by0 + (bh - (2 * b + hb)) / 2 + b
    wr = a * rng.uniform(*rim)  # radial rim width
    return dict(cx=cx, cy=cy, a=a, b=b, hb=hb, t=t, wr=wr)


def draw_band(canvas: Canvas, rng, metal, box, view, *, pave_stone=None, bottom_only=False):
    g = _ring_geometry(rng, box, view, rim=(0.13, 0.19) if pave_stone is not None else (0.07, 0.13))
    cx, cy, a, b, hb, t, wr = g["cx"], g["cy"], g["a"], g["b"], g["hb"], g["t"], g["wr"]
    base = METALS[metal]
    x0, y0 = int(cx - a) - 4, int(cy - b) - 4
    w, h = int(2 * a) + 9, int(2 * b + hb) + 9
    lx, ly = cx - x0, cy - y0
    ai, bi = a - wr, b - wr * t
    sd_ot = _ellipse_sd(h, w, lx, ly, a, b)
    sd_ob = _ellipse_sd(h, w, lx, ly + hb, a, b)
    sd_it = _ellipse_sd(h, w, lx, ly, ai, bi)
    sd_ib = _ellipse_sd(h, w, lx, ly + hb, ai, bi)
    cv_ = lambda sd: np.clip(0.5 - sd, 0, 1).astype(np.float32)  # noqa: E731
    outer_top, outer_bot, inner_top, inner_bot = cv_(sd_ot), cv_(sd_ob), cv_(sd_it), cv_(sd_ib)
    xx, yy = _grid(h, w)
    # the band swept from the top ellipse down by hb: union of both ellipses and the box between
    rect = np.clip(np.minimum(np.minimum(xx - (lx - a) + 0.5, (lx + a) - xx + 0.5),
                              np.minimum(yy - ly + 0.5, ly + hb - yy + 0.5)), 0, 1)
    swept = np.maximum(np.maximum(outer_top, outer_bot), rect)
    hole = np.minimum(inner_top, inner_bot)
    u = np.clip((xx - lx) / a, -0.999, 0.999)
    one = np.ones_like(u)

    def profile(d0, d1, scale, n=2.5):
        """Rounded (superelliptic) cross-section between two boundaries at distances d0, d1."""
        q = np.clip(d0 / np.maximum(d0 + d1, 1e-3), 0, 1)
        return (scale * np.clip(1 - np.abs(2 * q - 1) ** n, 0, 1) ** (1 / n)).astype(np.float32)

    # 1) inside back wall, seen through the ring (concave, faces viewer and down)
    inner_wall = np.clip(inner_top - hole, 0, 1)
    nb = (-0.8 * u, 0.35 * one, np.sqrt(1 - 0.64 * u * u))
    hgt = profile(np.maximum(-sd_it, 0), np.maximum(sd_ib, 0), wr * 0.3, 3.0)
    metal_layer(canvas, x0, y0, inner_wall, base, base_normal=nb, darken=np.full((h, w), 0.6, np.float32),
                height=hgt, metal_w=0.0)
    # 2) outer front wall (convex cylinder around the vertical axis)
    front = np.clip(swept - outer_top, 0, 1)
    if hb > 1:
        nf = (0.95 * u, 0.2 * one, np.sqrt(1 - 0.9 * u * u))
        hgt = profile(np.maximum(sd_ot, 0), np.maximum(-sd_ob, 0), min(hb, wr) * 0.45, 3.0)
        metal_layer(canvas, x0, y0, front, base, base_normal=nf, height=hgt)
    # 3) top rim (faces up / toward the camera depending on tilt), rounded across its width
    rim = np.clip(outer_top - inner_top, 0, 1)
    up = -0.9 * (1 - t)
    nr = (0.2 * u, up * one, one * math.sqrt(max(0.05, 1 - up * up)))
    hgt = profile(np.maximum(-sd_ot, 0), np.maximum(sd_it, 0), wr * t * rng.uniform(0.3, 0.55), 2.5)
    metal_layer(canvas, x0, y0, rim, base, base_normal=nr, height=hgt)
    if pave_stone is not None:
        _pave_on_rim(canvas, rng, pave_stone, cx, cy, a, b, wr, t)
    g["x0"], g["y0"] = x0, y0
    return g


def _pave_on_rim(canvas, rng, stone, cx, cy, a, b, wr, t):
    """Rows of tiny stones (2-5 px at output size) all around the top rim."""
    d1 = rng.uniform(3.0, 4.8)  # diameter at output size
    r = d1 * SS / 2
    gap = 0.8 * SS
    pitch = 2 * r + gap
    nrows = int(np.clip((wr * max(t, 0.5) - gap) // pitch, 1, 3))
    for k in range(nrows):
        frac = (k + 0.5) / nrows * 0.8 + 0.1
        ra = a - wr * frac
        rb = b - wr * t * frac
        # walk the ellipse by arc length
        th = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
        px, py = cx + ra * np.cos(th), cy + rb * np.sin(th)
        seg = np.hypot(np.diff(px), np.diff(py))
        s = np.concatenate([[0], np.cumsum(seg)])
        start = (k % 2) * pitch / 2
        for sv in np.arange(start, s[-1], pitch):
            i = int(np.searchsorted(s, sv))
            i = min(i, len(px) - 1)
            if s[-1] - sv < pitch * 0.8:  # closing the loop: do not overlap the first stone
                break
            rr = r * (0.85 + 0.15 * math.sin(th[i])) * min(1.0, 0.55 + t)  # foreshortening
            rr = float(np.clip(rr, 1.0 * SS, 2.5 * SS))
            draw_pave_stone(canvas, rng, stone, px[i], py[i], rr)


def draw_solitaire(canvas, rng, metal, stone, box, view):
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    rs = min(bw * rng.uniform(0.16, 0.24), bh * 0.22)
    band_box = (bx0 + bw * 0.08, by0 + rs * 1.6, bx1 - bw * 0.08, by1)
    g = draw_band(canvas, rng, metal, band_box, view)
    cx, top = g["cx"], g["cy"] - g["b"]
    scy = top - rs * 0.35
    sq = {"top": 1.0, "side": 0.62}.get(view, 0.8)
    ry = rs * sq
    base = METALS[metal]
    nprong = int(rng.choice([4, 6]))
    pang = (np.arange(nprong) + (0.5 if nprong == 4 else 0.0)) * 2 * np.pi / nprong
    # basket wires from the girdle down to the shank
    x0, y0 = int(cx - rs * 1.5), int(scy - rs * 1.4)
    w, h = int(rs * 3) + 4, int(rs * 1.4 + (top - scy) + rs * 1.2) + 4
    basket = np.zeros((h, w), np.uint8)
    wire = max(2.0 * SS, rs * 0.12)
    for ang in pang:
        px, py = cx + rs * 0.92 * math.cos(ang), scy + ry * 0.92 * math.sin(ang)
        qx, qy = cx + (px - cx) * 0.45, top + g["wr"] * 0.3
        _polyline(basket, np.array([[px - x0, py - y0], [qx - x0, qy - y0]]), wire)
    _ellipse(basket, cx - x0, top + g["wr"] * 0.2 - y0, rs * 0.55, max(2.0, rs * 0.18))
    metal_layer(canvas, x0, y0, basket.astype(np.float32) / 255, base, blur=1.0)
    draw_stone(canvas, rng, stone, cx, scy, rs, ry)
    # prong tips (label 4)
    pl, pw = rs * rng.uniform(0.22, 0.3), rs * rng.uniform(0.11, 0.15)
    pw = max(pw, 2.0 * SS)
    for ang in pang:
        px, py = cx + rs * 0.93 * math.cos(ang), scy + ry * 0.93 * math.sin(ang)
        s = int(pl * 2) + 6
        lx0, ly0 = int(px - s / 2), int(py - s / 2)
        cov = _ellipse_cov(s, s, px - lx0, py - ly0, pl * 0.6, pw,
                           math.degrees(math.atan2(ry * math.sin(ang), rs * math.cos(ang))))
        metal_layer(canvas, lx0, ly0, cov, base, blur=0.7, label=DETAIL_PRONG, label_mask=cov > 0.5,
                    metal_w=0.0)


def _curve_points(rng, box, n=4000):
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    kind = ["u", "wave", "loop"][int(rng.integers(3))]
    s = np.linspace(0, 1, n)
    if kind == "u":  # necklace hanging in a U
        x = bx0 + bw * s
        y = by0 + bh * (1 - (2 * s - 1) ** 2) * 0.95
    elif kind == "wave":
        x = bx0 + bw * s
        f = rng.uniform(0.6, 1.3)
        y = by0 + bh * (0.5 + 0.45 * np.sin(2 * np.pi * f * s + rng.uniform(0, 6.28)))
    else:  # bracelet lying as an open loop
        th = np.pi * (0.5 + 0.08 + 1.84 * s)
        x = (bx0 + bx1) / 2 + bw / 2 * np.cos(th)
        y = (by0 + by1) / 2 + bh / 2 * np.sin(th)
    return np.stack([x, y], 1), kind


def draw_chain(canvas, rng, metal, box, view, stone=None):
    base = METALS[metal]
    wire1 = rng.uniform(2.2, 3.4)  # wire width at output size
    thick = wire1 * SS
    llen = rng.uniform(5.0, 7.5) * wire1 * SS
    lwid = llen * rng.uniform(0.62, 0.75)
    pad = llen
    bx0, by0, bx1, by1 = box
    pts, kind = _curve_points(rng, (bx0 + pad, by0 + pad, bx1 - pad, by1 - pad))
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0], np.cumsum(seg)])
    pitch = min(llen - 2.1 * thick, llen / 2 + rng.uniform(0.4, 1.2) * thick)
    samples = np.arange(0, s[-1], pitch)
    edge_on = rng.uniform(1.0, 1.25)  # apparent width of edge-on links, in wire widths
    for k, sv in enumerate(samples):
        i = min(int(np.searchsorted(s, sv)), len(pts) - 2)
        cx, cy = pts[i]
        dx, dy = pts[i + 1] - pts[i]
        ang = math.degrees(math.atan2(dy, dx))
        a = llen / 2 - thick / 2
        r = int(llen / 2 + thick + 4)
        x0, y0 = int(cx) - r, int(cy) - r
        R = thick / 2
        if k % 2 == 0:  # link lying flat: an oval ring with a hole
            b = lwid / 2 - thick / 2
            d = np.abs(_ellipse_sd(2 * r, 2 * r, cx - x0, cy - y0, a, b, ang))  # distance to wire axis
            cov = np.clip(R + 0.5 - d, 0, 1).astype(np.float32)
            hgt = np.sqrt(np.clip(R * R - d * d, 0, None))
        else:  # link standing on edge: seen as a bar one wire thick
            b = R * edge_on
            sd = _ellipse_sd(2 * r, 2 * r, cx - x0, cy - y0, a + R, b, ang)
            cov = np.clip(0.5 - sd, 0, 1).astype(np.float32)
            din = np.clip(-sd, 0, b)
            hgt = b * np.sqrt(np.clip(1 - (1 - din / b) ** 2, 0, 1))
        metal_layer(canvas, x0, y0, cov, base, height=hgt.astype(np.float32), label=DETAIL_CHAIN,
                    label_mask=cov > 0.5, metal_w=0.0, gloss=1.2)
    if stone is not None:  # pendant: bezel-set stone hanging at the lowest point of the chain
        i = int(np.argmax(pts[:, 1]))
        sr = max(4.0 * SS, min(bx1 - bx0, by1 - by0) * 0.06)
        scx, scy = pts[i, 0], pts[i, 1] + sr * 0.9
        s2 = int(sr * 3)
        bx, by = int(scx - s2 / 2), int(scy - s2 / 2)
        bz = _ellipse_cov(s2, s2, scx - bx, scy - by, sr * 1.2, sr * 1.2)
        metal_layer(canvas, bx, by, bz, base, radius=sr * 0.2, blur=0.8, metal_w=0.0)
        draw_stone(canvas, rng, stone, scx, scy, sr, sr, cut="round")
    return {"shape": kind, "wire_px": float(wire1), "link_px": float(llen / SS), "links": int(len(samples))}


def _teardrop(cx, cy, rx, ry, n=200):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = np.sin(t) * np.sin(t / 2) ** 1.0
    y = -np.cos(t)
    x = x / np.abs(x).max()
    return np.stack([cx + rx * x, cy + ry * y], 1)


def draw_earring(canvas, rng, metal, stone, box, view):
    base = METALS[metal]
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    bead_d = rng.uniform(2.3, 3.8) * SS
    style = int(rng.integers(2))  # same engraving on both drops of the pair
    eng_w = rng.uniform(1.1, 1.9) * SS
    rx = min(bw * 0.2, bh * 0.3)
    ry = min(bh * 0.36, rx * rng.uniform(1.5, 1.8))
    for side in (0, 1):
        ex = bx0 + bw * (0.25 + 0.5 * side)
        ey = by1 - ry - 2
        outline = _teardrop(ex, ey, rx, ry)
        # ear wire + jump ring
        topy = ey - ry
        ring_r = max(3.0 * SS, rx * 0.13)
        x0, y0 = int(ex - rx * 0.8), int(by0)
        w, h = int(rx * 1.6), int(topy - by0 + ring_r * 2) + 4
        hook = np.zeros((h, w), np.uint8)
        hh = topy - ring_r * 1.6 - by0
        tt = np.linspace(0, 1, 60)
        hx = ex - x0 + rx * 0.35 * np.sin(np.pi * tt) * (1 if side else -1) * 0.0 + rx * 0.25 * (1 - np.cos(np.pi * tt))
        hy = topy - ring_r * 1.6 - y0 - hh * np.sin(np.pi * tt * 0.5) * 0.95
        _polyline(hook, np.stack([hx, hy], 1), max(2.0 * SS, ring_r * 0.45))
        _ellipse(hook, ex - x0, topy - ring_r * 0.8 - y0, ring_r, ring_r, 0, max(2, int(ring_r * 0.5)))
        metal_layer(canvas, x0, y0, hook.astype(np.float32) / 255, base, blur=0.8, metal_w=0.0)
        # drop body
        x0, y0 = int(ex - rx) - 4, int(ey - ry) - 4
        w, h = int(2 * rx) + 9, int(2 * ry) + 9
        body = _mask_aa(h, w, lambda m: _poly(m, outline - [x0, y0]))
        # engraved grooves (label 3): inner offset outlines + veins
        groove = np.zeros((h, w), np.float32)
        if style == 0:
            for sc in (0.62, 0.4):
                line = _teardrop(ex, ey + ry * (1 - sc) * 0.35, rx * sc, ry * sc, n=72) - [x0, y0]
                groove = np.maximum(groove, _stroke_cov(h, w, line, eng_w, closed=True))
        else:
            for k in range(-3, 4):
                a0 = np.array([ex, ey + ry * 0.45])
                a1 = np.array([ex + rx * 0.55 * k / 3, ey - ry * 0.35 + abs(k) * ry * 0.12])
                mid = (a0 + a1) / 2 + [rx * 0.08 * k / 3, -ry * 0.05]
                tt = np.linspace(0, 1, 16)[:, None]
                curve = (1 - tt) ** 2 * a0 + 2 * (1 - tt) * tt * mid + tt ** 2 * a1
                groove = np.maximum(groove, _stroke_cov(h, w, curve - [x0, y0], eng_w))
        gm = groove * (body > 0.99)
        hgt = _tube_height(body, radius=rx * 0.35, blur=1.5) - gm * eng_w * 0.8
        nx, ny, nz = normals_from_height(hgt, 1.0)
        rgb = shade_metal(base, nx, ny, nz, canvas.light)
        rgb = rgb * (1 - 0.62 * gm[..., None])
        canvas.over(x0, y0, rgb, body, metal=1.0 - gm, label=DETAIL_ENGRAVING, label_mask=gm > 0.4)
        # milgrain beads along the edge (label 2)
        inset = bead_d * 0.5 + 0.6 * SS
        seg = np.hypot(*np.diff(np.vstack([outline, outline[:1]]), axis=0).T)
        s = np.concatenate([[0], np.cumsum(seg)])
        beads = np.zeros((h, w), np.float32)
        bh_ = np.zeros((h, w), np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c = outline.mean(0)
        br = bead_d / 2
        for sv in np.arange(0, s[-1] - bead_d * 0.5, bead_d * 1.12):
            i = min(int(np.searchsorted(s, sv)), len(outline) - 1)
            p = outline[i]
            v = c - p
            v = v / (np.linalg.norm(v) + 1e-6)
            q = p + v * inset - [x0, y0]
            ix0, iy0 = int(q[0] - br - 2), int(q[1] - br - 2)
            sl = (slice(max(iy0, 0), iy0 + int(2 * br) + 5), slice(max(ix0, 0), ix0 + int(2 * br) + 5))
            dd = np.sqrt((xx[sl] - q[0]) ** 2 + (yy[sl] - q[1]) ** 2)
            beads[sl] = np.maximum(beads[sl], np.clip(br + 0.5 - dd, 0, 1))
            bh_[sl] = np.maximum(bh_[sl], np.sqrt(np.clip(br * br - dd * dd, 0, None)))
        nx, ny, nz = normals_from_height(cv2.GaussianBlur(bh_, (0, 0), 0.6), 1.0)
        rgb = shade_metal(base, nx, ny, nz, canvas.light, gloss=1.3)
        canvas.over(x0, y0, rgb, beads, metal=0.0, label=DETAIL_MILGRAIN, label_mask=beads > 0.5)
        if stone is not None:
            sr = rx * 0.32
            scx, scy = ex, ey + ry * 0.3
            # bezel
            s2 = int(sr * 3)
            bx, by = int(scx - s2 / 2), int(scy - s2 / 2)
            bz = _ellipse_cov(s2, s2, scx - bx, scy - by, sr * 1.18, sr * 1.18)
            metal_layer(canvas, bx, by, bz, base, radius=sr * 0.2, blur=0.8, metal_w=0.0)
            draw_stone(canvas, rng, stone, scx, scy, sr, sr, cut="round")


# --------------------------------------------------------------------------------------
# backgrounds (rendered at output resolution)
# --------------------------------------------------------------------------------------
def _lowfreq_noise(rng, h, w, cells, octaves=3):
    out = np.zeros((h, w), np.float32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        c = cells * (2 ** o)
        g = rng.standard_normal((max(2, int(c * h / max(h, w))) + 1, max(2, int(c * w / max(h, w))) + 1))
        out += amp * cv2.resize(g.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        tot += amp
        amp *= 0.5
    return out / tot


def render_background(rng, kind, w, h):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = yy / h
    u = xx / w
    r2 = ((u - 0.5) ** 2 + (v - 0.5) ** 2 * (h / w) ** 2) / 0.25
    vign = 1.0 - rng.uniform(0.05, 0.15) * r2
    meta = {"kind": kind}
    if kind in ("white_sweep", "grey_sweep"):
        lo, hi = (0.80, 0.92) if kind == "white_sweep" else (0.25, 0.45)
        top = rng.uniform(lo, hi)
        bot = np.clip(top + rng.uniform(-0.06, 0.06) * (hi - lo) / 0.12, lo, hi)
        lvl = top + (bot - top) * _smoothstep(0.0, 1.0, v)
        bg = np.repeat((lvl * vign)[..., None], 3, 2)
        bg = bg * np.array([1.0, 1.0, rng.uniform(0.985, 1.015)], np.float32)
        meta.update(level=[float(top), float(bot)])
    elif kind == "colored_paper":
        hue = rng.uniform(0, 360)
        col = _hsv_to_lin(hue, rng.uniform(0.15, 0.3), rng.uniform(0.75, 0.9))
        grad = 1.0 + rng.uniform(-0.08, 0.08) * (v - 0.5) + rng.uniform(-0.05, 0.05) * (u - 0.5)
        tex = 1.0 + 0.01 * _lowfreq_noise(rng, h, w, 60, 2)
        bg = col[None, None, :] * (grad * vign * tex)[..., None]
        meta.update(color=[float(c) for c in col])
    else:  # textured_desk: wood planks (streaky grain along the boards) + blurred clutter
        L = int(math.hypot(w, h)) + 8
        warp = _lowfreq_noise(rng, L, L, 3, 2) * rng.uniform(25, 60)
        gy, gx = np.mgrid[0:L, 0:L].astype(np.float32)
        rings = np.sin((gy + warp) / rng.uniform(9, 18) * 2 * np.pi * 0.25)
        rings = np.sign(rings) * np.abs(rings) ** 0.6
        streak = cv2.resize(rng.standard_normal((L // 2, 6)).astype(np.float32), (L, L),
                            interpolation=cv2.INTER_CUBIC)
        fibre = cv2.resize(rng.standard_normal((L, L // 40)).astype(np.float32), (L, L),
                           interpolation=cv2.INTER_LINEAR)
        plank = rng.uniform(0.18, 0.35) * L
        seam_d = np.abs(((gy + rng.uniform(0, plank)) % plank) - plank / 2)
        seams = 1 - 0.5 * np.exp(-((plank / 2 - seam_d) / 1.2) ** 2)
        tone = 1 + 0.12 * np.floor((gy + rng.uniform(0, plank)) / plank) % 3 / 2
        lvl = (0.8 + 0.12 * rings + 0.08 * streak + 0.05 * fibre) * seams * tone
        ang = rng.uniform(-20, 20)
        M = cv2.getRotationMatrix2D((L / 2, L / 2), ang, 1.0)
        M[:, 2] -= [(L - w) / 2, (L - h) / 2]
        lvl = cv2.warpAffine(lvl.astype(np.float32), M, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        base = np.array(_hsv_to_lin(rng.uniform(18, 36), rng.uniform(0.45, 0.7), rng.uniform(0.35, 0.6)))
        bg = base[None, None, :] * np.clip(lvl, 0.2, 1.5)[..., None] * vign[..., None]
        meta.update(color=[float(c) for c in base], grain_angle_deg=float(ang))
        clutter = []
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, 1) * w, rng.uniform(0, 1) * h
            # keep clutter to the frame border so it does not fight the piece
            if rng.random() < 0.5:
                cx = rng.choice([rng.uniform(-0.05, 0.08), rng.uniform(0.92, 1.05)]) * w
            else:
                cy = rng.choice([rng.uniform(-0.05, 0.08), rng.uniform(0.92, 1.05)]) * h
            rad = rng.uniform(0.05, 0.12) * max(w, h)
            m = np.zeros((h, w), np.float32)
            cv2.circle(m, (int(cx), int(cy)), int(rad), 1.0, -1)
            m = cv2.GaussianBlur(m, (0, 0), rad * 0.15)
            col = _hsv_to_lin(rng.uniform(0, 360), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.8))
            bg = bg * (1 - m[..., None]) + col[None, None, :] * m[..., None]
            clutter.append([float(cx), float(cy), float(rad)])
        meta["clutter"] = clutter
    return np.clip(bg, 0, 1).astype(np.float32), meta


def _hsv_to_lin(hdeg, s, v):
    c = np.uint8([[[int(hdeg / 2) % 180, int(s * 255), int(v * 255)]]])
    rgb = cv2.cvtColor(c, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0
    return srgb_to_linear(rgb).astype(np.float32)


def srgb_to_linear(x):
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    x = np.clip(np.asarray(x, np.float32), 0, 1)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# --------------------------------------------------------------------------------------
# illuminant
# --------------------------------------------------------------------------------------
_XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                         [-0.9692660, 1.8760108, 0.0415560],
                         [0.0556434, -0.2040259, 1.0572252]])


def planck_xy(T: float) -> tuple[float, float]:
    """CIE 1931 chromaticity of a blackbody (Kim et al. cubic spline, 1667-25000 K)."""
    if T <= 4000:
        x = -0.2661239e9 / T ** 3 - 0.2343589e6 / T ** 2 + 0.8776956e3 / T + 0.179910
    else:
        x = -3.0258469e9 / T ** 3 + 2.1070379e6 / T ** 2 + 0.2226347e3 / T + 0.240390
    if T <= 2222:
        y = -1.1063814 * x ** 3 - 1.34811020 * x ** 2 + 2.18555832 * x - 0.20219683
    elif T <= 4000:
        y = -0.9549476 * x ** 3 - 1.37418593 * x ** 2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x ** 3 - 5.87338670 * x ** 2 + 3.75112997 * x - 0.37001483
    return x, y


def illuminant_gains(kelvin: float, tint: float) -> np.ndarray:
    """Per-channel linear-sRGB gains of a blackbody light vs D65, green normalised to 1.

    ``tint`` > 0 shifts towards green, < 0 towards magenta (fraction of green gain).
    """
    x, y = planck_xy(kelvin)
    xyz = np.array([x / y, 1.0, (1 - x - y) / y])
    rgb = _XYZ_TO_SRGB @ xyz  # D65 white maps to (1,1,1)*k
    rgb = rgb / rgb[1]
    rgb[1] *= 1.0 + tint
    return (rgb / rgb[1]).astype(np.float64)


# --------------------------------------------------------------------------------------
# scene
# --------------------------------------------------------------------------------------
def _choose(rng, options, forced, name):
    if forced is not None:
        if forced not in options:
            raise ValueError(f"unknown {name} {forced!r}; choose from {sorted(options)}")
        return forced
    return list(options)[int(rng.integers(len(options)))]


def _piece_box(rng, piece, view, w2, h2):
    """Bounding box of the piece (supersampled px): 15-50 % of the frame, with margin."""
    ring_aspect = {"top": 1.15, "side": 2.2}.get(view, 1.6)
    aspect = {"band": ring_aspect, "solitaire": ring_aspect * 0.8, "pave": ring_aspect, "chain": 1.6,
              "earring": 1.05, "pendant": 0.8}[piece]
    aspect *= rng.uniform(0.85, 1.15)
    lo, hi = (0.32, 0.52) if view == "detail" else (0.2, 0.45)
    area = rng.uniform(lo, hi) * w2 * h2
    bw = math.sqrt(area * aspect)
    bh = bw / aspect
    margin = 0.06 * min(w2, h2)
    s = min(1.0, (w2 - 2 * margin) / bw, (h2 - 2 * margin) / bh)
    bw, bh = bw * s, bh * s
    x0 = rng.uniform(margin, max(margin, w2 - margin - bw))
    y0 = rng.uniform(margin, max(margin, h2 - margin - bh))
    return (x0, y0, x0 + bw, y0 + bh)


def render_scene(rng: np.random.Generator, size=(1536, 1024), *, piece=None, metal=None, stone=None,
                 background=None, defects: bool = True, view=None, sensor_dust: list[dict] | None = None,
                 world: str = "default", plate: bool = False) -> Scene:
    """Render one scene.  ``size`` is (width, height).  Pure function of ``rng`` and arguments.

    ``plate``: also render the set's clean plate into ``layers["plate"]``: the same backdrop, light and
    camera without the piece, its shadows or its reflection, with its own sensor noise and backdrop
    dust (the image itself is unchanged: the plate draws from a fork of ``rng``). Not for an acrylic
    riser (drawn with the piece's reflection): there ``layers`` has no plate.

    ``sensor_dust``: normalised spots (``defects.sensor_dust_spots``) darkening the light at
    fixed frame positions; drawn by the caller so a whole shoot shares them.
    ``world``: "default" (the narrow studio, byte-identical to before) or "wide" (see
    :mod:`models.simulator.studio`: more backdrops, acrylic risers, hard shadows, light
    boxes, openwork pendants, camera effects; its studio draws come from a child generator).
    """
    from . import defects as dfx  # local import to avoid a cycle
    from . import studio

    if world not in studio.WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {studio.WORLDS}")
    wide = world == "wide"
    w, h = int(size[0]), int(size[1])
    if wide:
        wrng = studio.child_rng(rng)
        plan = studio.plan(wrng, piece=piece, metal=metal, background=background, metals=tuple(METALS))
        piece, metal, background = plan["piece"], plan["metal"], plan["backdrop"]
        wbg, wbg_meta = studio.backdrop(wrng, plan["under"], w, h)
        wbg, sweep_meta = studio.sweep_light(wrng, wbg, plan["under"])
        wbg_meta.update(sweep_meta, under=plan["under"])
    piece = _choose(rng, tuple(studio.WIDE_PIECES) if wide else PIECES, piece, "piece")
    metal = _choose(rng, METALS, metal, "metal")
    background = _choose(rng, tuple(studio.WIDE_BACKDROPS) if wide else BACKGROUNDS, background, "background")
    view = _choose(rng, VIEWS, view, "view")
    stone_pick = _choose(rng, STONES, stone, "stone")
    if piece in ("band", "chain") and stone is None:
        stone_used = None
    elif piece in ("earring", "pendant") and stone is None:
        stone_used = stone_pick if rng.random() < 0.5 else None
    elif piece == "pave" and stone is None:
        stone_used = "diamond" if rng.random() < 0.7 else stone_pick
    else:
        stone_used = stone_pick
    # band/chain carry no stone unless one is forced: then an accent stone (band) or a pendant (chain)

    light = make_light(rng)
    h2, w2 = h * SS, w * SS
    canvas = Canvas(h2, w2, light)
    box = _piece_box(rng, piece, view, w2, h2)
    extra = {}
    if wide:
        box = studio.adjust_box(box, background, w2, h2)
        light = studio.mirror_light(wrng, light, wbg, box, SS, metal, plan["under"])
        canvas.light = light
    if piece == "band":
        g = draw_band(canvas, rng, metal, box, view)
        extra["ring_center"] = [g["cx"] / SS, g["cy"] / SS + g["hb"] / SS / 2]
        if stone_used is not None:  # accent stone on the rim front
            draw_stone(canvas, rng, stone_used, g["cx"], g["cy"] + g["b"] - g["wr"] * g["t"] / 2,
                       g["wr"] * 0.55, g["wr"] * 0.55 * g["t"] + 2, cut="round")
    elif piece == "pave":
        g = draw_band(canvas, rng, metal, box, view, pave_stone=stone_used)
        extra["ring_center"] = [g["cx"] / SS, g["cy"] / SS + g["hb"] / SS / 2]
    elif piece == "solitaire":
        draw_solitaire(canvas, rng, metal, stone_used, box, view)
    elif piece == "chain":
        extra["chain"] = draw_chain(canvas, rng, metal, box, view, stone_used)
    elif piece == "pendant":
        extra["pendant"] = studio.draw_pendant(canvas, rng, metal, stone_used, box, view)
    else:
        draw_earring(canvas, rng, metal, stone_used, box, view)

    # downsample the piece
    alpha = np.clip(_down(canvas.alpha), 0, 1)
    color = _down(canvas.color)
    metal_w = np.clip(_down(canvas.metal), 0, 1)
    details = np.zeros((h, w), np.uint8)
    for lab in sorted(DETAIL_NAMES):
        m = _down((canvas.labels == lab).astype(np.float32))
        details[m >= (0.35 if lab == DETAIL_ENGRAVING else 0.5)] = lab
    del canvas

    layers = {}
    if wide:
        empty = wbg
        bg, bg_meta = _wide_backdrop(wrng, plan, wbg, wbg_meta, alpha, color, light, layers)
    else:
        bg, bg_meta = render_background(rng, background, w, h)
        empty = bg
    fork = _fork(rng) if plate and not (wide and plan["backdrop"] == "acrylic") else None
    if not wide and background in ("white_sweep", "grey_sweep", "colored_paper"):
        # soft contact shadow: background darkening below the piece
        sh = np.roll(alpha, int(0.01 * h) + 2, axis=0)
        sh = cv2.GaussianBlur(sh, (0, 0), 0.012 * max(w, h))
        sh2 = cv2.GaussianBlur(alpha, (0, 0), 0.003 * max(w, h) + 1)
        strength = rng.uniform(0.25, 0.45)
        bg = bg * (1 - strength * np.clip(0.6 * sh + 0.5 * sh2, 0, 1))[..., None]
        bg_meta["contact_shadow"] = float(strength)
    clean = np.clip(bg * (1 - alpha[..., None]) + color, 0, 1).astype(np.float32)

    meta = {
        "piece": piece,
        "metal": metal,
        "stone": stone_used,
        "background": background,
        "view": view,
        "background_params": bg_meta,
        "box": [float(v / SS) for v in box],
        **extra,
    }
    source, defect_mask, dmeta = dfx.apply_defects(rng, clean, alpha, metal_w, details, enabled=defects,
                                                    sensor_dust=sensor_dust)
    meta.update(dmeta)
    shot_light = (dmeta["illuminant"]["kelvin"], dmeta["illuminant"]["tint"], dict(dmeta["lighting"]))
    meta["lighting"]["studio"] = light
    meta["size"] = [w, h]
    if wide:
        source, cam = studio.camera(wrng, source, alpha, background)
        if "jpeg_quality" in cam:
            layers["sensor"], source = source, studio.jpeg(source, cam["jpeg_quality"])
        meta["world"] = "wide"
        meta["studio"] = {"backdrop": background, "under": plan["under"], "shadow": plan["shadow"], "camera": cam}
    if fork is not None:
        no_piece = np.zeros((h, w), np.float32)
        layers["plate"], _, _ = dfx.apply_defects(fork, np.clip(empty, 0, 1).astype(np.float32), no_piece, no_piece,
                                                  np.zeros((h, w), np.uint8), enabled=defects,
                                                  sensor_dust=sensor_dust, light=shot_light)
        if wide:   # the camera's focus follows the piece's place: pass its matte for the geometry
            layers["plate"], _ = studio.camera(fork, layers["plate"], alpha, background, settings=cam)
            if "jpeg_quality" in cam:
                layers["plate_sensor"], layers["plate"] = layers["plate"], studio.jpeg(layers["plate"], cam["jpeg_quality"])
    return Scene(source=source, clean=clean, alpha=alpha.astype(np.float32), defects=defect_mask,
                 details=details, metal=metal_w.astype(np.float32), meta=meta, layers=layers)


def _fork(rng: np.random.Generator) -> np.random.Generator:
    """A generator seeded from a copy of ``rng``'s state: deterministic, and ``rng`` is not advanced."""
    twin = np.random.Generator(type(rng.bit_generator)())
    twin.bit_generator.state = rng.bit_generator.state
    return np.random.default_rng(int(twin.integers(2**63)))


def _wide_backdrop(wrng, plan, bg, bg_meta, alpha, color, light, layers):
    """Wide world: cast shadows and the acrylic riser drawn into the backdrop (alpha stays 0)."""
    from . import studio

    bg, shadow, bg_meta["shadow"] = studio.shadows(wrng, bg, alpha, light, plan["shadow"])
    layers["shadow"] = shadow
    if plan["backdrop"] == "acrylic":
        bg, layers["reflection"], bg_meta["acrylic"] = studio.acrylic(wrng, bg, color, alpha)
    return bg, bg_meta
