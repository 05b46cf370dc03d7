"""valworld: an independent "validation family" of studio jewelry photos with exact truth.

    python bench/valworld.py OUT --images 24 --seed 9001 [--size 1200x800] [--family F] [--plate] [--setup shared]
    python bench/valworld.py OUT --images 24 --seed 1 --size 600x400 --sheet /tmp/valworld_sheet.png

Used ONLY to grade Loupe (never to tune or train it).  Written from scratch, apart
from ``models/simulator``: its own studio environment (softboxes as bright
rectangles in angle space, dark surround, a front card with the lens hole, the
backdrop mirrored in faces that look down or sideways), Schlick-Fresnel metals
(tinted golds, neutral white metals; polished or satin), brilliant-cut facet
mosaics that look the environment up, a 2.5-D painter's rasteriser (tubes,
beads, bevelled plates; 2x supersampled), its own backdrops (sweeps with a seam,
papers with fibres, light box, clear acrylic riser with the piece's reflection,
wood and linen desks), a Krystek Planckian cast with a Duv tint, soft or hard
contact shadows, depth of field, Poisson-Gaussian noise and JPEG quality.

Truth is a :class:`models.simulator.scene.Scene` (same fields as the simulator):
``clean`` is the scene under neutral D65 light with even light (no fall-off,
vignette or sweep seam, no exposure change, no defects, no noise); the contact
shadow and the acrylic reflection are part of the scene, so they are in
``clean`` too, and never in ``alpha``.  Depth of field is optics of the scene: it
is applied to the piece layer (colour *and* alpha) and to the backdrop alike.

Image ``k`` of shoot ``seed`` comes from ``SeedSequence([seed, 0x7A11D, k])``
only (independent of the shoot size and of the simulator's seeds); its sensor
noise and defects come from a child stream, and :func:`render_plate` re-renders
the same draw without the piece and with independent noise.

``setup="shared"`` (:func:`write_shoot`, ``--setup shared``): a studio shooting a collection with one
setup.  :func:`shoot_setup` draws, once per shoot from ``SeedSequence([seed, 0x5E7A9, 0])``, the
backdrop (family, albedo and texture, seam), the studio seen in reflections, the light (kelvin, tint,
exposure, fall-off, vignette; shadow direction, relative length, strength, hard or soft) and the
camera (ISO, JPEG quality, aperture and a fixed focus row); each image draws only its piece (kind,
metal, stone, view, position, scale) from its own stream, as above.  ``acrylic_riser`` is not
offered in shared mode (the block and its reflection are staged per piece).  Every image's meta
carries ``"setup": "shared"`` and ``"setup_params"``; the plate is that setup's empty backdrop.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.simulator.scene import Scene  # noqa: E402  (the dataclass only)
from models.simulator.writers import WRITERS, srgb_icc, write_truth  # noqa: E402

GENERATOR = "valworld"
FAMILIES = {"white_sweep": 0.3, "grey_sweep": 0.15, "paper": 0.2, "light_box": 0.1, "acrylic_riser": 0.1,
            "desk": 0.15}
PIECES = ("ring", "pave", "chain", "pendant", "earring")
# normal-incidence reflectance F0 (linear sRGB) and draw weight
METALS = {"yellow_gold": ((0.96, 0.71, 0.33), 0.22), "rose_gold": ((0.94, 0.62, 0.50), 0.13),
          "white_gold": ((0.80, 0.80, 0.78), 0.25), "silver": ((0.95, 0.94, 0.91), 0.22),
          "platinum": ((0.70, 0.69, 0.67), 0.18)}
STONES = {"diamond": (1.0, 1.0, 1.0), "sapphire": (0.03, 0.09, 0.62), "ruby": (0.70, 0.02, 0.07),
          "emerald": (0.02, 0.45, 0.15)}
ISOS = (100, 400, 1600, 3200)
JPEG_QUALITIES = (75, 85, 92, 98)
PAPERS = {"beige": (0.74, 0.63, 0.48), "cream": (0.86, 0.80, 0.64), "kraft": (0.42, 0.27, 0.15),
          "pink": (0.86, 0.56, 0.62), "mint": (0.55, 0.80, 0.64), "light_blue": (0.52, 0.66, 0.88),
          "lilac": (0.66, 0.55, 0.82)}
D_PAVE, D_MILGRAIN, D_ENGRAVE, D_PRONG, D_CHAIN, D_BAIL, D_OPENWORK = 1, 2, 3, 4, 5, 6, 7
SS = 2
_SEED_TAG = 0x7A11D
_SETUP_TAG = 0x5E7A9  # shared studio setup of a shoot (setup="shared")
SETUPS = ("per_image", "shared")
# families not offered with a shared setup: the acrylic block and its reflection are staged under
# each piece (they would move with it), so a shared clean plate could not show them
SHARED_EXCLUDED = ("acrylic_riser",)


def _ss(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ------------------------------------------------------------------------------ colour
def _krystek_xy(kelvin: float) -> tuple[float, float]:
    """Planckian locus (Krystek 1985 rational fit, CIE 1960 uv) -> CIE 1931 xy; plus the uv
    point and unit normal for a Duv offset."""
    T = float(kelvin)
    u = (0.860117757 + 1.54118254e-4 * T + 1.28641212e-7 * T * T) / (1 + 8.42420235e-4 * T + 7.08145163e-7 * T * T)
    v = (0.317398726 + 4.22806245e-5 * T + 4.20481691e-8 * T * T) / (1 - 2.89741816e-5 * T + 1.61456053e-7 * T * T)
    return u, v


def cast_gains(kelvin: float, duv: float = 0.0) -> np.ndarray:
    """Linear-sRGB gains of a blackbody at ``kelvin`` (plus ``duv``, the distance along the locus'
    normal in CIE 1960 uv: + above the locus, green; - below, magenta) relative to D65, scaled so the
    largest gain is 1 (the camera meters on the brightest channel)."""
    u0, v0 = _krystek_xy(kelvin)
    u1, v1 = _krystek_xy(kelvin + 1.0)
    tx, ty = u1 - u0, v1 - v0
    n = math.hypot(tx, ty)
    u, v = u0 + ty / n * duv, v0 - tx / n * duv  # the locus runs to lower u and v: this normal points above it
    x, y = 3 * u / (2 * u - 8 * v + 4), 2 * v / (2 * u - 8 * v + 4)
    X, Y, Z = x / y, 1.0, (1 - x - y) / y
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = m @ np.array([X, Y, Z])
    ref = m @ np.array([0.95047, 1.0, 1.08883])
    g = np.maximum(rgb / ref, 1e-3)
    return g / g.max()


def to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x < 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def write_jpeg_q(path: Path, linear: np.ndarray, quality: int = 92) -> Path:
    """8-bit sRGB JPEG at ``quality`` (4:2:0 below 90, as cameras do), embedded sRGB ICC."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(np.round(to_srgb(linear) * 255).astype(np.uint8), "RGB")
    img.save(buf, "JPEG", quality=int(quality), subsampling=2 if quality < 90 else 0, icc_profile=srgb_icc())
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


# ------------------------------------------------------------------------------ studio
class Studio:
    """Environment seen by polished surfaces, looked up by reflection direction.

    Camera frame: x right, y down, z towards the camera.  Directions are turned into
    azimuth (0 = towards the camera, +-180 = behind the piece) and elevation (+ up)."""

    def __init__(self, rng, backdrop_rgb):
        self.tent = bool(rng.random() < 0.5)  # light tent (white all round) or dark studio
        self.dark = float(rng.uniform(0.35, 0.8) if self.tent else rng.uniform(0.02, 0.08))
        self.bg = np.asarray(backdrop_rgb, np.float32)
        self.boxes = []  # (az, el, half width, half height, radiance) in degrees
        n = int(rng.integers(2, 4))
        for i in range(n):
            side = -1 if i % 2 == 0 else 1
            self.boxes.append((side * rng.uniform(25, 75), rng.uniform(10, 55), rng.uniform(12, 30),
                               rng.uniform(10, 25), rng.uniform(2.0, 5.0)))
        self.boxes.append((rng.uniform(-30, 30), rng.uniform(62, 80), rng.uniform(30, 60), rng.uniform(8, 16),
                           rng.uniform(1.5, 4.0)))  # overhead strip
        self.card = float(rng.uniform(0.3, 0.85)) if rng.random() < 0.6 else 0.0

    def env(self, rx, ry, rz, rough=0.0):
        az = np.degrees(np.arctan2(rx, rz))
        el = np.degrees(np.arcsin(np.clip(-ry, -1, 1)))
        out = np.full(rx.shape + (3,), self.dark, np.float32)
        for ac, ec, hw, hh, L in self.boxes:
            e = 1.5 + 14 * rough
            da = np.abs((az - ac + 180) % 360 - 180)
            w = _ss(hw + e, hw - e, da) * _ss(hh + e, hh - e, np.abs(el - ec))
            w = w * (1 - 0.3 * np.clip(da / hw, 0, 1) ** 2)
            out += (L * (1 - 0.55 * rough) * w)[..., None]
        if self.card:
            d = np.hypot(az, el)
            c = self.card * _ss(28, 20, d) * _ss(2.5, 5.0, d)  # white card around the lens
            out += c[..., None]
        wb = np.maximum(_ss(-4, -28, el), _ss(100, 135, np.abs(az)))  # floor / sweep behind
        out = out * (1 - wb[..., None]) + wb[..., None] * self.bg
        if rough > 0:
            out = out * (1 - 0.4 * rough) + 0.4 * rough * out.mean(axis=-1, keepdims=True).mean()
        return out


class Material:
    def __init__(self, f0, rough=0.0, weight=1.0):
        self.f0 = np.asarray(f0, np.float32)
        self.rough, self.weight = float(rough), float(weight)

    def shade(self, studio, nx, ny, nz):
        rx, ry, rz = 2 * nz * nx, 2 * nz * ny, 2 * nz * nz - 1
        env = studio.env(rx, ry, rz, self.rough)
        fr = (1 - np.clip(nz, 0, 1)) ** 5
        f = self.f0 + (1 - self.f0) * fr[..., None]
        return env * f


# ------------------------------------------------------------------------------ 2.5-D rasteriser
class Layer:
    """Premultiplied piece layer at SS x resolution; primitives are shaded as drawn."""

    def __init__(self, h, w, studio):
        self.h, self.w, self.studio = h, w, studio
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.a = np.zeros((h, w), np.float32)
        self.metal = np.zeros((h, w), np.float32)
        self.lab = np.zeros((h, w), np.uint8)

    def put(self, x0, y0, cov, rgb, metal=0.0, label=0):
        h, w = cov.shape
        sx, sy = max(0, -x0), max(0, -y0)
        ex, ey = min(w, self.w - x0), min(h, self.h - y0)
        if ex <= sx or ey <= sy:
            return
        cov, rgb = cov[sy:ey, sx:ex], rgb[sy:ey, sx:ex]
        win = (slice(y0 + sy, y0 + ey), slice(x0 + sx, x0 + ex))
        keep = 1 - cov
        self.rgb[win] = self.rgb[win] * keep[..., None] + rgb * cov[..., None]
        self.a[win] = self.a[win] * keep + cov
        if isinstance(metal, np.ndarray):
            metal = metal[sy:ey, sx:ex]
        self.metal[win] = self.metal[win] * keep + metal * cov
        lab = self.lab[win]
        lab[cov > 0.5] = label

    def field(self, pts, reach):
        """Nearest point on a polyline: window origin, distance, offset vector, arc length."""
        pts = np.asarray(pts, np.float32)
        x0 = int(max(0, math.floor(pts[:, 0].min() - reach)))
        x1 = int(min(self.w, math.ceil(pts[:, 0].max() + reach) + 1))
        y0 = int(max(0, math.floor(pts[:, 1].min() - reach)))
        y1 = int(min(self.h, math.ceil(pts[:, 1].max() + reach) + 1))
        if x1 <= x0 or y1 <= y0:
            return None
        h, w = y1 - y0, x1 - x0
        d2 = np.full((h, w), np.inf, np.float32)
        vx, vy, s = (np.zeros((h, w), np.float32) for _ in range(3))
        seg = np.hypot(*np.diff(pts, axis=0).T) if len(pts) > 1 else np.zeros(0)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        for i in range(max(1, len(pts) - 1)):
            a, b = pts[i], pts[min(i + 1, len(pts) - 1)]
            sx0 = max(x0, int(math.floor(min(a[0], b[0]) - reach))) - x0
            sx1 = min(x1, int(math.ceil(max(a[0], b[0]) + reach) + 1)) - x0
            sy0 = max(y0, int(math.floor(min(a[1], b[1]) - reach))) - y0
            sy1 = min(y1, int(math.ceil(max(a[1], b[1]) + reach) + 1)) - y0
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            px = (np.arange(sx0, sx1, dtype=np.float32) + x0 + 0.5 - a[0])[None, :]
            py = (np.arange(sy0, sy1, dtype=np.float32) + y0 + 0.5 - a[1])[:, None]
            ex, ey = b[0] - a[0], b[1] - a[1]
            L2 = max(ex * ex + ey * ey, 1e-6)
            t = np.clip((px * ex + py * ey) / L2, 0, 1)
            dx, dy = px - t * ex, py - t * ey
            dd = dx * dx + dy * dy
            sub = (slice(sy0, sy1), slice(sx0, sx1))
            m = dd < d2[sub]
            d2[sub][m] = dd[m]
            vx[sub][m] = dx[m]
            vy[sub][m] = dy[m]
            s[sub][m] = (cum[i] + t * math.sqrt(L2))[m]
        return x0, y0, np.sqrt(d2), vx, vy, s

    def tube(self, pts, r, mat, *, label=0, flat=1.0, concave=None, groove=None, dim=None):
        """Round (``flat`` > 1: flat-topped) wire of radius ``r`` along a polyline.

        ``concave(s)`` -> 0..1 marks arc lengths where the inside of a band faces the camera;
        ``groove(s, q)`` -> 0..1 engraved darkening (labelled ``D_ENGRAVE``)."""
        f = self.field(pts, r + 2)
        if f is None:
            return None
        x0, y0, d, vx, vy, s = f
        cov = np.clip(r + 0.5 - d, 0, 1)
        q = np.clip(d / r, 0, 0.999) ** flat
        inv = q / np.maximum(d, 1e-6)
        nx, ny = vx * inv, vy * inv
        gain = np.ones_like(d)
        if concave is not None:
            c = concave(s)
            nx, ny = nx * (1 - 2 * c), ny * (1 - 2 * c)
            gain = gain * (1 - 0.5 * c)
        if dim is not None:
            gain = gain * dim(s, q)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.0, 1))
        rgb = np.zeros(d.shape + (3,), np.float32)
        on = cov > 0
        rgb[on] = mat.shade(self.studio, nx[on], ny[on], nz[on]) * gain[on][:, None]
        self.put(x0, y0, cov, rgb, mat.weight, label)
        if groove is not None:
            g = groove(s, np.clip(d / r, 0, 1)) * (cov > 0.99)
            if g.max() > 0:
                self.put(x0, y0, g.astype(np.float32), rgb * 0.12, mat.weight * 0.3, D_ENGRAVE)
        return f

    def bead(self, cx, cy, r, mat, label=0):
        return self.tube([(cx, cy), (cx, cy)], r, mat, label=label)

    def plate(self, x0, y0, cov, mat, bevel, label=0, dome=0.15):
        """Bevelled flat piece from a coverage window (holes included): rounded edges, a faint dome."""
        m = (cov > 0.5).astype(np.uint8)
        dt = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        t = np.minimum(dt / bevel, 1.0)
        hgt = bevel * np.sqrt(1 - (1 - t) ** 2) + dome * cv2.GaussianBlur(dt, (0, 0), 3.0)
        hgt = cv2.GaussianBlur(hgt.astype(np.float32), (0, 0), 1.2)
        gy, gx = np.gradient(hgt)
        n = np.sqrt(gx * gx + gy * gy + 1)
        nx, ny, nz = -gx / n, -gy / n, 1 / n
        rgb = np.zeros(cov.shape + (3,), np.float32)
        on = cov > 0
        rgb[on] = mat.shade(self.studio, nx[on], ny[on], nz[on])
        self.put(x0, y0, cov.astype(np.float32), rgb, mat.weight, label)

    def stone(self, rng, kind, cx, cy, rx, ry, rot=0.0, label=0, pavilion=0.0):
        """Brilliant-cut mosaic: table, stars, kites, upper girdle facets; each facet looks the
        studio up along a jittered internal-return direction.  ``pavilion`` > 0 adds the cone
        below the girdle (side views), as deep as ``pavilion * ry``."""
        body = np.asarray(STONES[kind], np.float32)
        pad = 3
        x0, y0 = int(cx - rx - pad), int(cy - ry - pad)
        h = int(2 * ry + 2 * pad + pavilion * ry * 2 + 2)
        w = int(2 * rx + 2 * pad)
        if h <= 0 or w <= 0:
            return
        img = np.zeros((h, w, 3), np.float32)
        c, sn = math.cos(rot), math.sin(rot)

        def P(ang, frac):
            u, v = math.cos(ang) * rx * frac, math.sin(ang) * ry * frac
            return (cx - x0 + c * u - sn * v, cy - y0 + sn * u + c * v)

        def col(tilt, phi):
            if rng.random() < 0.55:  # light returned from the pavilion: any direction in front
                az, el = math.radians(rng.uniform(-80, 80)), math.radians(rng.uniform(-30, 80))
                r = np.array([[math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el)]], np.float32)
            else:
                t, p = math.radians(tilt + rng.uniform(-8, 8)), phi + rng.uniform(-0.4, 0.4)
                n = (math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t))
                r = np.array([[2 * n[2] * n[0], 2 * n[2] * n[1], 2 * n[2] ** 2 - 1]], np.float32)
            e = self.studio.env(r[:, 0], r[:, 1], r[:, 2])[0]
            if kind == "diamond":
                lum = float(e.mean())
                v = np.full(3, min(lum, 2.0) * 0.9 + 0.02, np.float32)
                if rng.random() < 0.12:  # fire
                    v = v * np.asarray([rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.4)])
                return v
            lum = min(float(e.mean()), 2.0)
            return body ** (1.6 - 0.5 * min(lum, 1)) * (0.1 + 0.9 * lum) + 0.05 * e

        def fill(pts, colour):
            p = np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)
            cv2.fillConvexPoly(img, p, tuple(float(v) for v in colour), cv2.LINE_8, 4)

        if pavilion > 0:
            cul = (cx - x0, cy - y0 + ry * (1 + pavilion * 2))
            k = 7
            for i in range(k):
                a0, a1 = math.pi * i / k, math.pi * (i + 1) / k
                fill([P(a0, 1), P(a1, 1), cul], col(50, a0 + 0.2))
        n = 8
        ta = [2 * math.pi * k / n + math.pi / n for k in range(n)]
        sa = [2 * math.pi * (k + 0.5) / n + math.pi / n for k in range(n)]
        fill([P(a, 1.02) for a in np.linspace(0, 2 * math.pi, 33)[:-1]], (0.1, 0.1, 0.1))
        for k in range(n):
            kn = (k + 1) % n
            fill([P(sa[k], 0.78), P(ta[k], 1.0), P(sa[k], 1.0)], col(42, sa[k]))
            fill([P(sa[k], 0.78), P(sa[k], 1.0), P(ta[kn], 1.0)], col(42, sa[k] + 0.3))
            fill([P(ta[k], 0.56), P(sa[k - 1], 0.78), P(ta[k], 1.0), P(sa[k], 0.78)], col(33, ta[k]))
            fill([P(ta[k], 0.56), P(ta[kn], 0.56), P(sa[k], 0.78)], col(18, sa[k]))
        fill([P(a, 0.56) for a in ta], col(0, 0.0))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        u, v = (xx - (cx - x0)) * c + (yy - (cy - y0)) * sn, -(xx - (cx - x0)) * sn + (yy - (cy - y0)) * c
        rr = np.sqrt((u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2)
        cov = np.clip((1 - rr) * min(rx, ry) + 0.5, 0, 1)
        if pavilion > 0:
            pv = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(pv, np.round(np.array([P(0, 1), P(math.pi, 1), cul]) * 16).astype(np.int32), 255,
                               cv2.LINE_AA, 4)
            cov = np.maximum(cov, (pv.astype(np.float32) / 255) * (v > 0))
        self.put(x0, y0, cov, img, 0.0, label)


# ------------------------------------------------------------------------------ pieces
def _ellipse_pts(cx, cy, a, b, rot=0.0, t0=0.0, t1=2 * math.pi, n=None):
    if n is None:
        n = int(np.clip((a + b) * abs(t1 - t0) / 7, 12, 700))
    t = np.linspace(t0, t1, n + 1)
    c, s = math.cos(rot), math.sin(rot)
    u, v = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + c * u - s * v, cy + s * u + c * v], 1)


def _teardrop(cx, cy, rx, ry, n=160):
    """Drop outline, point at the top."""
    t = np.linspace(0, 2 * math.pi, n)
    return np.stack([cx + rx * np.sin(t) * np.sin(t / 2) ** 1.2, cy - ry * np.cos(t)], 1)


def _bezier(p, n=200):
    p = np.asarray(p, np.float64)
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3]
    return pts


def _resample(pts, step):
    seg = np.hypot(*np.diff(pts, axis=0).T)
    cum = np.concatenate([[0], np.cumsum(seg)])
    s = np.arange(0, cum[-1], step)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], 1)


def draw_chain(L, rng, mat, path, link, wire):
    """Cable chain: alternate flat open ovals (real holes) and links on edge (bars) along ``path``."""
    pitch = link * 0.66
    cen = _resample(path, pitch)
    if len(cen) < 2:
        return 0
    tang = np.gradient(cen, axis=0)
    ang = np.arctan2(tang[:, 1], tang[:, 0])
    r = wire / 2
    a = link / 2 - r
    b = max(link * 0.36, 2.6 * r) - r
    order = list(range(0, len(cen), 2)) + list(range(1, len(cen), 2))
    for i in order:
        flat = i % 2 == 0
        bb = b if flat else 0.3 * r
        L.tube(_ellipse_pts(cen[i, 0], cen[i, 1], a, bb, ang[i]), r, mat, label=D_CHAIN,
               dim=None if flat else (lambda s, q: np.float32(0.85)))
    return len(cen)


def draw_ring(L, rng, mat, box, view, *, pave=None, solitaire=None):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = x1 - x0, y1 - y0
    t = min(bw, bh) * rng.uniform(0.06, 0.11)
    top_room = 0.0
    if solitaire:
        top_room = bh * 0.32
        cy += top_room / 2
    a, b = bw / 2 - t, (bh - top_room) / 2 - t
    rot = math.radians(rng.uniform(-12, 12))
    flat = float(rng.uniform(1.0, 3.0))
    # far half (top of the ellipse, sin < 0) shows the inside of the band for lying views
    lying = view in ("three_quarter", "top", "detail")

    pts = _ellipse_pts(cx, cy, a, b, rot, -math.pi / 2, 3 * math.pi / 2)
    per = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    conc = (lambda s: 0.8 * (_ss(0.22, 0.1, s / per) + _ss(0.78, 0.9, s / per))) if lying and b > 1.5 * t else None
    groove = None
    if pave is None and solitaire is None and rng.random() < 0.4:
        gw = max(0.9, t * 0.08)
        groove = (lambda s, q: (q < gw / t).astype(np.float32))
    L.tube(pts, t, mat, flat=flat, concave=conc, groove=groove)
    info = {"ring_center": [cx, cy], "ring_axes": [a, b, t]}
    if pave is not None:
        n = int(np.clip(math.pi * a / (t * 1.25), 5, 40))
        rs = t * 0.62
        beads = rng.random() < 0.5
        for k in range(n):
            th = math.pi * (0.12 + 0.76 * (k + 0.5) / n)  # front half, sin > 0
            fs = 0.55 + 0.45 * math.sin(th)
            px = cx + math.cos(rot) * a * math.cos(th) - math.sin(rot) * b * math.sin(th)
            py = cy + math.sin(rot) * a * math.cos(th) + math.cos(rot) * b * math.sin(th)
            seat = Material(mat.f0 * 0.15, 0.6, 0.0)
            L.bead(px, py, rs * 1.18 * fs, seat)
            L.stone(rng, pave, px, py, rs * fs, rs * fs, rng.uniform(0, 1), label=D_PAVE)
            if k < n - 1:
                th2 = math.pi * (0.12 + 0.76 * (k + 1) / n)
                qa = (th + th2) / 2
                for side in (-1, 1):
                    off = side * rs * 0.9
                    bx = cx + math.cos(rot) * a * math.cos(qa) - math.sin(rot) * (b + off) * math.sin(qa)
                    by = cy + math.sin(rot) * a * math.cos(qa) + math.cos(rot) * (b + off) * math.sin(qa)
                    L.bead(bx, by, max(1.1, rs * 0.28), mat, label=D_PRONG)
        if beads:  # milgrain along both edges of the front half
            for side in (-1, 1):
                nb = int(np.clip(math.pi * a / max(2.6, t * 0.22), 8, 140))
                for k in range(nb):
                    th = math.pi * (0.1 + 0.8 * (k + 0.5) / nb)
                    e = b + side * t * 0.93
                    bx = cx + math.cos(rot) * (a + side * t * 0.93) * math.cos(th) - math.sin(rot) * e * math.sin(th)
                    by = cy + math.sin(rot) * (a + side * t * 0.93) * math.cos(th) + math.cos(rot) * e * math.sin(th)
                    L.bead(bx, by, max(1.0, t * 0.08), mat, label=D_MILGRAIN)
    if solitaire is not None:
        sr = min(bw * 0.22, top_room * 0.85)
        pav = 0.8
        sy = cy - b - t * 0.6 - sr * 0.4 * (1 + 2 * pav)
        k = int(rng.integers(4, 7))
        pr = max(1.3, sr * 0.07)
        base = (cx, cy - b - t * 0.2)
        tips = []
        for i in range(k):
            phi = 2 * math.pi * (i + 0.5) / k + rng.uniform(-0.1, 0.1)
            tips.append((phi, cx + sr * 1.0 * math.cos(phi), sy + sr * 0.4 * math.sin(phi) - pr * 0.5))
        back = [p for p in tips if math.sin(p[0]) < 0]
        front = [p for p in tips if math.sin(p[0]) >= 0]
        for phi, tx, ty in back:
            L.tube([base, ((base[0] + tx) / 2, (base[1] + ty) / 2 + sr * 0.2), (tx, ty)], pr, mat)
        L.stone(rng, solitaire, cx, sy, sr, sr * 0.4, 0.0, pavilion=pav)
        for phi, tx, ty in front:
            L.tube([base, ((base[0] + tx) / 2, (base[1] + ty) / 2 + sr * 0.2), (tx, ty)], pr, mat)
        for phi, tx, ty in tips:
            L.bead(tx, ty - pr * 0.3, pr * 1.35, mat, label=D_PRONG)
    return info


def draw_pendant(L, rng, mat, box, stone):
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    body_r = min(bw * 0.36, bh * 0.28)
    by = y1 - body_r * 1.15
    wire = max(3.0, bw * rng.uniform(0.008, 0.014))
    shape = rng.choice(["disc", "drop", "heart"])
    eye_r = max(4.0, body_r * 0.2)
    te = max(1.8, eye_r * 0.3)
    eye_cy = by - body_r * (1.2 if shape == "drop" else 1.0) - eye_r * 0.75
    bail_h, bail_w = eye_r * 2.4, eye_r * 1.25
    bail_cy = eye_cy - eye_r + te - bail_h
    # short chain: two strands from the top corners into the bail
    link = wire * rng.uniform(3.6, 5.0)
    for side in (-1, 1):
        top = (cx + side * bw * rng.uniform(0.35, 0.48), y0)
        path = _bezier([top, (top[0], y0 + bh * 0.15), (cx + side * bail_w * 1.5, bail_cy - bail_h * 0.8),
                        (cx, bail_cy - bail_h * 0.35)])
        draw_chain(L, rng, mat, path, link, wire)
    tb = max(2.4, bail_w * 0.28)
    L.tube(_ellipse_pts(cx, bail_cy, bail_w - tb, bail_h - tb), tb, mat, label=D_BAIL)
    L.tube(_ellipse_pts(cx, eye_cy, eye_r, eye_r * rng.uniform(0.8, 1.0), 0.0), te, mat, label=D_BAIL)
    h, w = int(body_r * 2.6 + 8), int(body_r * 2.4 + 8)
    ox, oy = int(cx - w / 2), int(by - h / 2)
    m = np.zeros((h, w), np.uint8)
    c = (w / 2, h / 2)
    if shape == "disc":
        poly = _ellipse_pts(c[0], c[1], body_r, body_r)
    elif shape == "drop":
        poly = _teardrop(c[0], c[1], body_r * 0.95, body_r * 1.2)
    else:
        tt = np.linspace(0, 2 * math.pi, 160)
        hx, hy = 16 * np.sin(tt) ** 3, 13 * np.cos(tt) - 5 * np.cos(2 * tt) - 2 * np.cos(3 * tt) - np.cos(4 * tt)
        poly = np.stack([c[0] + hx / 17 * body_r, c[1] - hy / 17 * body_r], 1)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    if stone is None and rng.random() < 0.6:  # openwork centre
        cv2.circle(m, (int(c[0] * 16), int(c[1] * 16)), int(body_r * 0.38 * 16), 0, -1, cv2.LINE_AA, 4)
    L.plate(ox, oy, m.astype(np.float32) / 255, mat, bevel=max(3.0, body_r * 0.18))
    if stone is not None:
        sr = body_r * 0.5
        L.tube(_ellipse_pts(cx, by, sr + 1, sr + 1), max(2.0, sr * 0.14), mat)
        L.stone(rng, stone, cx, by, sr, sr, rng.uniform(0, 1))
    return {"bail": [cx, bail_cy], "eyelet": [cx, eye_cy, eye_r]}


def draw_earring(L, rng, mat, box, stone, hoop):
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    hook_w = max(2.6, bw * 0.012)
    if hoop:
        rr = min(bw, bh) * 0.42
        t = max(2.5, rr * rng.uniform(0.05, 0.12))
        cy = y1 - rr - t
        spacing = rng.uniform(3.0, 5.0) * max(2.0, t * 0.35)
        groove = (lambda s, q: ((np.abs((s % spacing) - spacing / 2) < 0.9) & (q < 0.75)).astype(np.float32)) \
            if rng.random() < 0.6 else None
        L.tube(_ellipse_pts(cx, cy, rr, rr * rng.uniform(0.9, 1.0), 0.0, -math.pi / 2 + 0.12,
                            3 * math.pi / 2 - 0.12), t, mat, flat=1.6, groove=groove)
        return {"kind": "hoop"}
    # openwork drop
    dr = min(bw * 0.42, bh * 0.33)
    dcy = y1 - dr * 1.05
    h, w = int(dr * 2.8 + 8), int(dr * 2.2 + 8)
    ox, oy = int(cx - w / 2), int(dcy - h * 0.6)
    c = (w / 2, dcy - oy)
    outline = _teardrop(c[0], c[1] - dr * 0.25, dr, dr * 1.3)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    bar = max(3.0, dr * rng.uniform(0.07, 0.12))
    k = int(rng.integers(6, 11))
    hr = min(dr * 0.5 * math.sin(math.pi / k) - bar / 2, dr * 0.22)
    for i in range(k):
        ph = 2 * math.pi * i / k
        hx, hy = c[0] + dr * 0.6 * math.sin(ph), c[1] + dr * 0.6 * math.cos(ph)
        cv2.ellipse(m, (int(hx * 16), int(hy * 16)), (int(max(hr, 1.5) * 16), int(max(hr * 1.4, 1.5) * 16)),
                    math.degrees(-ph), 0, 360, 0, -1, cv2.LINE_AA, 4)
    if stone is None:
        cv2.circle(m, (int(c[0] * 16), int(c[1] * 16)), int(dr * 0.25 * 16), 0, -1, cv2.LINE_AA, 4)
    L.plate(ox, oy, m.astype(np.float32) / 255, mat, bevel=max(2.0, bar * 0.5), label=D_OPENWORK)
    L.tube(outline + [ox, oy], max(1.6, bar * 0.45), mat)
    if rng.random() < 0.5:
        nb = int(2 * math.pi * dr * 1.25 / max(3.2, bar * 0.9))
        pts = _resample(outline + [ox, oy], np.hypot(*np.diff(outline, axis=0).T).sum() / nb)
        for p in pts:
            L.bead(p[0], p[1], max(1.1, bar * 0.3), mat, label=D_MILGRAIN)
    if stone is not None:
        L.stone(rng, stone, c[0] + ox, c[1] + oy, dr * 0.24, dr * 0.24, rng.uniform(0, 1))
    top = dcy - dr * 1.55
    er = max(3.5, dr * 0.13)
    L.tube(_ellipse_pts(cx, top - er * 1.05, er, er), max(1.3, er * 0.3), mat, label=D_BAIL)
    hook = _bezier([(cx, top - er * 1.9), (cx, y0 + bh * 0.02), (cx + dr * 0.9, y0), (cx + dr * 0.8, y0 + bh * 0.25)], 60)
    L.tube(hook, hook_w / 2, mat)
    return {"kind": "openwork"}


# ------------------------------------------------------------------------------ backdrops
def _noise(rng, h, w, cell):
    g = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def backdrop(rng, family, w, h):
    """Albedo of the empty set (even light, neutral)."""
    meta = {}
    if family in ("white_sweep", "light_box", "acrylic_riser", "grey_sweep"):
        if family == "light_box":
            lvl = rng.uniform(0.93, 0.99)
        elif family == "grey_sweep" or (family == "acrylic_riser" and rng.random() < 0.35):
            lvl = rng.uniform(0.16, 0.45)
        else:
            lvl = rng.uniform(0.78, 0.94)
        tint = np.array([1 + rng.uniform(-0.003, 0.003), 1.0, 1 + rng.uniform(-0.003, 0.003)])
        col = lvl * tint
        tex = 1 + 0.004 * _noise(rng, h, w, 40)
        meta.update(level=float(lvl))
    elif family == "paper":
        name = list(PAPERS)[int(rng.integers(len(PAPERS)))]
        col = np.array(PAPERS[name]) * rng.uniform(0.9, 1.06)
        fib = np.zeros((h, w), np.float32)
        nf = int(w * h / (350 if name == "kraft" else 900))
        xs, ys = rng.uniform(0, w, nf), rng.uniform(0, h, nf)
        ln, an = rng.uniform(3, 14, nf), rng.uniform(0, np.pi, nf)
        val = rng.uniform(-1, 1, nf)
        for x, y, l, a, v in zip(xs, ys, ln, an, val):
            cv2.line(fib, (int(x), int(y)), (int(x + l * math.cos(a)), int(y + l * math.sin(a))), float(v), 1,
                     cv2.LINE_AA)
        amp = 0.05 if name == "kraft" else 0.02
        tex = 1 + amp * cv2.GaussianBlur(fib, (0, 0), 0.6) + 0.015 * _noise(rng, h, w, 25) \
            + 0.01 * rng.standard_normal((h, w)).astype(np.float32)
        meta.update(paper=name)
    else:  # desk: wood or linen
        if rng.random() < 0.6:
            name = "wood"
            col = np.array([(0.42, 0.26, 0.13), (0.20, 0.11, 0.06), (0.62, 0.50, 0.38)][int(rng.integers(3))])
            ang = rng.uniform(-15, 15)
            D = int(math.hypot(w, h)) + 4
            prof = np.cumsum(rng.standard_normal(D)).astype(np.float32)
            prof = (prof - cv2.GaussianBlur(prof[None], (0, 0), 40)[0]) / 6
            stripe = np.tile(np.tanh(prof)[:, None], (1, D))
            warp = _noise(rng, D, D, D / 3) * 25
            yy = np.clip(np.arange(D)[:, None] + warp, 0, D - 1).astype(np.float32)
            xx = np.tile(np.arange(D, dtype=np.float32)[None], (D, 1))
            stripe = cv2.remap(stripe, xx, yy, cv2.INTER_LINEAR)
            streak = cv2.resize(rng.standard_normal((D, 8)).astype(np.float32), (D, D))
            lvl = 1 + 0.18 * stripe + 0.05 * streak
            M = cv2.getRotationMatrix2D((D / 2, D / 2), ang, 1.0)
            M[:, 2] -= [(D - w) / 2, (D - h) / 2]
            tex = cv2.warpAffine(lvl.astype(np.float32), M, (w, h), borderMode=cv2.BORDER_REFLECT)
        else:
            name = "linen"
            col = np.array([(0.62, 0.57, 0.48), (0.45, 0.45, 0.43), (0.80, 0.76, 0.68)][int(rng.integers(3))])
            period = rng.uniform(3.0, 5.0)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            sx = np.sin(2 * np.pi * xx / period + 3 * _noise(rng, h, w, 60))
            sy = np.sin(2 * np.pi * yy / period + 3 * _noise(rng, h, w, 60))
            slub = _noise(rng, h, w, 8) * 0.5
            tex = 1 + 0.07 * sx * sy + 0.04 * slub + 0.02 * rng.standard_normal((h, w)).astype(np.float32)
        meta.update(desk=name)
    bg = np.clip(np.asarray(col, np.float32)[None, None, :] * tex[..., None], 0, 1).astype(np.float32)
    meta["color"] = [float(v) for v in np.asarray(col)]
    return bg, meta


# ------------------------------------------------------------------------------ scene
def image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SEED_TAG, int(index)]))


def _pick(rng, options, weights, forced, name):
    i = int(rng.choice(len(options), p=np.asarray(weights) / np.sum(weights)))
    if forced is None:
        return options[i]
    if forced not in options:
        raise ValueError(f"unknown {name} {forced!r}; choose from {list(options)}")
    return forced


def _blur_depth(img, sig_map, smax):
    """Depth-of-field: blend the image with two blurred copies by the per-pixel blur radius."""
    if smax <= 0.05:
        return img
    b1 = cv2.GaussianBlur(img, (0, 0), smax / 2)
    b2 = cv2.GaussianBlur(img, (0, 0), smax)
    t = np.clip(sig_map / smax, 0, 1)
    w0, w1 = np.clip(1 - 2 * t, 0, 1), 1 - np.abs(2 * t - 1)
    w2 = np.clip(2 * t - 1, 0, 1)
    if img.ndim == 3:
        w0, w1, w2 = w0[..., None], w1[..., None], w2[..., None]
    return (img * w0 + b1 * w1 + b2 * w2).astype(np.float32)


def _shift(a, dx, dy):
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(a, M, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR, borderValue=0)


def _draw_light(rng, family, w, h, kelvin=None) -> dict:
    """The light of a set (cast, exposure, fall-off, vignette, sweep seam) and its shadow's direction,
    relative length, strength and softness; draws in a fixed order (the per-image order of old)."""
    kelvin = float(rng.uniform(2800, 7500) if kelvin is None else (rng.uniform(0, 1), kelvin)[1])
    # negated: until stop 40 cast_gains' normal pointed below the locus; so every light of the family stays where it was
    duv = -float(rng.uniform(-0.006, 0.006))
    exposure = float(rng.uniform(0.25, 0.6) if family == "light_box" else rng.uniform(-0.35, 0.35))
    hard = family != "light_box" and rng.random() < 0.4
    falloff = float(rng.uniform(0.0, 0.3) if family == "light_box" else rng.uniform(0.1, 1.5))
    radial = rng.random() < 0.4
    vign = float(rng.uniform(0.0, 0.35))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if radial:
        hx, hy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.0, 0.6) * h
        t = np.clip(np.hypot(xx - hx, yy - hy) / math.hypot(w, h), 0, 1)
        geo = {"hotspot": [float(hx), float(hy)]}
    else:
        th = math.radians(rng.uniform(45, 135))  # mostly top to bottom
        p = (xx - w / 2) * math.cos(th) + (yy - h / 2) * math.sin(th)
        t = (p - p.min()) / max(1e-6, p.max() - p.min())
        geo = {"direction_deg": math.degrees(th)}
    illum = np.power(2.0, -falloff * t)
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    illum *= 1 - vign * r2 ** 1.5
    seam = None
    if family in ("white_sweep", "grey_sweep", "paper", "acrylic_riser"):
        s0, curv = rng.uniform(0.05, 0.55) * h, rng.uniform(-0.25, 0.25) * h / (w / 2) ** 2
        sw, step = rng.uniform(0.04, 0.12) * h, rng.uniform(-0.18, 0.12)
        ys_ = s0 + curv * (xx - w / 2) ** 2
        illum *= 1 + step * _ss(-sw, sw, yy - ys_)
        seam = {"y": float(s0), "step": float(step)}
        geo.update(seam_curvature=float(curv), seam_width=float(sw))
    sh_ang = math.radians(rng.uniform(20, 160))
    sh_k = rng.uniform(0.03, 0.12) if hard else rng.uniform(0.02, 0.07)  # x the piece's size
    sh_str = float(rng.uniform(0.3, 0.6) if hard else rng.uniform(0.2, 0.45))
    sh_blur = rng.uniform(0.5, 1.2) if hard else rng.uniform(0.02, 0.05)  # px (hard) or x size (soft)
    return {"kelvin": kelvin, "duv": duv, "exposure": exposure, "hard": hard, "falloff": falloff,
            "radial": radial, "vign": vign, "illum": illum, "seam": seam, "geo": geo, "sh_ang": sh_ang,
            "sh_k": sh_k, "sh_str": sh_str, "sh_blur": sh_blur}


class ShootSetup:
    """One studio setup shared by a whole shoot: backdrop (family, albedo with its texture, so
    paper colour and fibres too), the studio seen in reflections, the light (cast, tint, exposure,
    fall-off, vignette, sweep seam), the shadow's direction/length/strength/softness, and the
    camera (ISO, JPEG quality, aperture and focus row).  ``params`` is its JSON-able record."""

    def __init__(self, seed: int, size=(1200, 800), family=None, kelvin=None):
        w, h = int(size[0]), int(size[1])
        self.size = (w, h)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SETUP_TAG, 0]))
        fams = [f for f in FAMILIES if f not in SHARED_EXCLUDED]
        if family in SHARED_EXCLUDED:
            raise ValueError(f"family {family!r} is not available with a shared setup (the riser is staged "
                             "per piece)")
        self.family = _pick(rng, fams, [FAMILIES[f] for f in fams], family, "family")
        self.bg, self.bg_meta = backdrop(rng, self.family, w, h)
        self.studio = Studio(rng, self.bg.reshape(-1, 3).mean(0))
        self.light = _draw_light(rng, self.family, w, h, kelvin)
        self.dof = float(rng.uniform(0.6, 2.2)) if rng.random() < 0.5 else 0.0
        self.focus_y = float(rng.uniform(0.3, 0.7) * h)
        self.iso = int(ISOS[int(rng.integers(4))])
        self.jpeg_quality = int(JPEG_QUALITIES[int(rng.integers(4))])
        lt, st = self.light, self.studio
        self.params = {
            "seed": int(seed), "size": [w, h], "family": self.family, "backdrop": self.bg_meta,
            "studio": {"tent": bool(st.tent), "dark": float(st.dark), "card": float(st.card),
                       "boxes": [[float(v) for v in b] for b in st.boxes]},
            "lighting": {"kelvin": lt["kelvin"], "tint": lt["duv"], "exposure": lt["exposure"],
                         "falloff_stops": lt["falloff"], "falloff": "radial" if lt["radial"] else "linear",
                         "vignette": lt["vign"], "seam": lt["seam"], **lt["geo"],
                         "shadow": "hard" if lt["hard"] else "soft", "shadow_strength": lt["sh_str"],
                         "shadow_angle_deg": math.degrees(lt["sh_ang"]), "shadow_length": float(lt["sh_k"]),
                         "shadow_blur": float(lt["sh_blur"]),
                         "gains": [float(g) for g in cast_gains(lt["kelvin"], lt["duv"])]},
            "iso": self.iso, "jpeg_quality": self.jpeg_quality, "dof": self.dof, "focus_y": self.focus_y,
        }


def shoot_setup(seed: int, size=(1200, 800), family=None, kelvin=None) -> ShootSetup:
    """The shared studio setup of shoot ``seed``: drawn from ``SeedSequence([seed, 0x5E7A9, 0])`` only;
    ``family`` / ``kelvin`` force those draws (``acrylic_riser`` is not offered: see SHARED_EXCLUDED)."""
    return ShootSetup(seed, size, family, kelvin)


def render(seed: int, index: int, size=(1200, 800), family=None, piece=None, metal=None, *, kelvin=None,
           setup: "ShootSetup | None" = None, _plate=False) -> Scene:
    """Render image ``index`` of shoot ``seed`` (``size`` = (width, height)); ``family``, ``piece``,
    ``metal`` and ``kelvin`` force those draws (every other draw stays as it was).

    ``setup`` (from :func:`shoot_setup`): take the backdrop, light, shadow direction/hardness and
    camera from that shared studio setup; only the piece comes from this image's own draws
    (``kelvin`` is then ignored: force it in :func:`shoot_setup`)."""
    w, h = int(size[0]), int(size[1])
    rng = image_rng(seed, index)
    if setup is not None and _plate:  # the shoot's clean plate: its own noise, apart from every image
        cam_rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SETUP_TAG, 2]))
    else:
        cam_rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SEED_TAG, int(index), 1 + int(_plate)]))
    if setup is None:
        family = _pick(rng, list(FAMILIES), list(FAMILIES.values()), family, "family")
    else:
        if family is not None and family != setup.family:
            raise ValueError(f"family {family!r} differs from the shared setup's {setup.family!r}")
        family = setup.family
    piece = _pick(rng, list(PIECES), [0.2, 0.2, 0.2, 0.2, 0.2], piece, "piece")
    mw = [v[1] for v in METALS.values()]
    if family in ("white_sweep", "light_box"):  # the hard case: white metal on white, common
        mw = [v[1] * (1.8 if k in ("white_gold", "silver", "platinum") else 1.0) for k, v in METALS.items()]
    metal = _pick(rng, list(METALS), mw, metal, "metal")
    stone_pick = list(STONES)[int(rng.choice(4, p=[0.55, 0.15, 0.15, 0.15]))]
    satin = rng.random() < 0.25
    view = str(rng.choice(["front", "three_quarter", "top", "side", "detail"]))

    if setup is None:
        bg, bg_meta = backdrop(rng, family, w, h)
        studio = Studio(rng, bg.reshape(-1, 3).mean(0))
    else:
        if (w, h) != setup.size:
            raise ValueError(f"size {(w, h)} differs from the shared setup's {setup.size}")
        bg, bg_meta, studio = setup.bg, setup.bg_meta, setup.studio
    mat = Material(METALS[metal][0], 0.45 if satin else 0.0, 0.35 if satin else 1.0)

    # where the piece goes (1x px): 15-50 % of the frame area
    aspect = {"ring": 1.25, "pave": 1.3, "chain": 1.5, "pendant": 0.75, "earring": 0.6}[piece] * rng.uniform(0.85, 1.2)
    area = rng.uniform(0.3, 0.5) if view == "detail" else rng.uniform(0.15, 0.4)
    if family == "acrylic_riser":  # leave room below for the block and the reflection
        area *= 0.7
    bw = math.sqrt(area * w * h * aspect)
    bh = bw / aspect
    mg = 0.05 * min(w, h)
    sc = min(1.0, (w - 2 * mg) / bw, (h - 2 * mg) / bh)
    bw, bh = bw * sc, bh * sc
    ymax = h * 0.6 if family == "acrylic_riser" else h - mg
    bx = rng.uniform(mg, max(mg, w - mg - bw))
    by = rng.uniform(mg, max(mg, ymax - bh))
    box = (bx, by, bx + bw, by + bh)

    L = Layer(h * SS, w * SS, studio)
    sbox = tuple(v * SS for v in box)
    stone, extra = None, {}
    if piece == "ring":
        stone = stone_pick if rng.random() < 0.55 else None
        if view == "side" and stone is not None:
            view = "front"
        extra = draw_ring(L, rng, mat, sbox, view, solitaire=stone)
    elif piece == "pave":
        stone = "diamond" if rng.random() < 0.7 else stone_pick
        extra = draw_ring(L, rng, mat, sbox, "three_quarter" if view == "side" else view, pave=stone)
    elif piece == "chain":
        x0, y0, x1, y1 = sbox
        kind = rng.choice(["u", "s", "line"])
        if kind == "u":
            ctrl = [(x0, y0), (x0 + (x1 - x0) * 0.1, y1 + (y1 - y0) * 0.3), (x1 - (x1 - x0) * 0.1, y1 + (y1 - y0) * 0.3), (x1, y0)]
        elif kind == "s":
            ctrl = [(x0, y1), (x0 + (x1 - x0) * 0.7, y1 + (y1 - y0) * 0.2), (x0 + (x1 - x0) * 0.3, y0 - (y1 - y0) * 0.2), (x1, y0)]
        else:
            ctrl = [(x0, y0 + (y1 - y0) * rng.uniform(0, 1)), (x0 + (x1 - x0) / 3, y0), (x0 + 2 * (x1 - x0) / 3, y1),
                    (x1, y0 + (y1 - y0) * rng.uniform(0, 1))]
        wire = SS * rng.uniform(2.0, 5.0)
        link = float(np.clip(max(x1 - x0, y1 - y0) * rng.uniform(0.03, 0.07), wire * 3.6, wire * 7))
        n = draw_chain(L, rng, mat, _bezier(ctrl, 400), link, wire)
        extra = {"links": n, "wire_px": wire / SS, "link_px": link / SS, "path": str(kind)}
    elif piece == "pendant":
        stone = stone_pick if rng.random() < 0.5 else None
        extra = draw_pendant(L, rng, mat, sbox, stone)
    else:
        hoop = rng.random() < 0.35
        stone = stone_pick if (not hoop and rng.random() < 0.5) else None
        extra = draw_earring(L, rng, mat, sbox, stone, hoop)
    extra = {k: (np.asarray(v, float) / SS).tolist() if isinstance(v, (list, tuple)) else v for k, v in extra.items()}

    def down(x):
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)

    alpha = np.clip(down(L.a), 0, 1)
    prgb = down(L.rgb)
    metal_w = np.clip(down(L.metal), 0, 1)
    details = np.zeros((h, w), np.uint8)
    for lab in (D_OPENWORK, D_BAIL, D_CHAIN, D_PRONG, D_ENGRAVE, D_MILGRAIN, D_PAVE):
        frac = down((L.lab == lab).astype(np.float32))
        details[frac >= (0.35 if lab == D_ENGRAVE else 0.5)] = lab
    del L
    ys, xs = np.nonzero(alpha > 0.02)
    ybot = int(ys.max()) if len(ys) else int(box[3])
    size_px = max(bw, bh)

    # lighting (+ the shadow's direction and hardness): one consecutive block of draws
    lt = _draw_light(rng, family, w, h, kelvin) if setup is None else setup.light
    kelvin, duv, exposure, hard, falloff = lt["kelvin"], lt["duv"], lt["exposure"], lt["hard"], lt["falloff"]
    radial, vign, illum, seam = lt["radial"], lt["vign"], lt["illum"], lt["seam"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # shadow: a darkening of the backdrop next to / below the piece
    sh_ang, sh_str = lt["sh_ang"], lt["sh_str"]
    sh_len = size_px * lt["sh_k"]
    cast = _shift(alpha, sh_len * math.cos(sh_ang), sh_len * math.sin(sh_ang))
    if hard:
        shadow = cv2.GaussianBlur(cast, (0, 0), lt["sh_blur"])
    else:
        shadow = np.clip(1.4 * cv2.GaussianBlur(cast, (0, 0), size_px * lt["sh_blur"]), 0, 1)
    shadow = np.clip(shadow + 0.5 * cv2.GaussianBlur(alpha, (0, 0), 1.5 + size_px * 0.004), 0, 1)
    # acrylic riser: block under the piece, its top mirrors the piece
    refl_a = np.zeros((h, w), np.float32)
    acr = None
    if family == "acrylic_riser":
        ax0 = int(max(0, box[0] - rng.uniform(0.05, 0.3) * bw))
        ax1 = int(min(w, box[2] + rng.uniform(0.05, 0.3) * bw))
        top_y = ybot
        depth = int(max(4, min(h - top_y - 0.06 * h, bh * rng.uniform(0.7, 1.1))))
        front = int(min(h - top_y - depth, rng.uniform(0.08, 0.3) * h))
        R = float(rng.uniform(0.2, 0.4))
        fade = max(4.0, bh * rng.uniform(0.3, 0.7))
        acr = {"x": [ax0, ax1], "top": top_y, "depth": depth, "front": front, "reflectance": R}
    if _plate:
        alpha[:], prgb[:], metal_w[:], details[:] = 0, 0, 0, 0
        shadow[:] = 0
    bgs = bg * (1 - sh_str * (0.5 if family == "acrylic_riser" else 1.0) * shadow)[..., None]
    if acr is not None:
        ax0, ax1, top_y, depth, front = acr["x"][0], acr["x"][1], acr["top"], acr["depth"], acr["front"]
        tint = np.array([0.90, 0.95, 0.94], np.float32)
        k = np.arange(depth, dtype=np.float32)
        src_rows = np.clip(2 * top_y - (top_y + np.arange(depth)), 0, h - 1)
        fr = (R * np.exp(-k / fade))[:, None]
        ra = alpha[src_rows, ax0:ax1] * fr
        rr = cv2.GaussianBlur(prgb[src_rows, ax0:ax1], (0, 0), 0.8) * fr[..., None]
        refl_a[top_y:top_y + depth, ax0:ax1] = ra
        top = bgs[top_y:top_y + depth, ax0:ax1]
        bgs[top_y:top_y + depth, ax0:ax1] = top * tint * (1 - ra[..., None]) + rr
        fy = top_y + depth
        bgs[fy:fy + front, ax0:ax1] *= tint * 0.86
        bgs[max(0, fy - 1):fy + 1, ax0:ax1] = np.minimum(1.0, bgs[max(0, fy - 1):fy + 1, ax0:ax1] * 1.25 + 0.08)
        for ex in (ax0, ax1 - 1):
            bgs[top_y:fy + front, max(0, ex - 1):ex + 1] *= 0.8
        bgs[top_y:top_y + 1, ax0:ax1] *= 0.85

    # depth of field: blur grows away from the focus row (the piece)
    if setup is None:
        dof = float(rng.uniform(0.6, 2.2)) if rng.random() < 0.5 else 0.0
        fy = (box[1] + box[3]) / 2
    else:  # a fixed camera: the focus plane (row) belongs to the setup, not to the piece
        dof, fy = setup.dof, setup.focus_y
    if dof > 0:
        sig = dof * np.clip(np.abs(yy - fy) / (0.5 * h), 0, 1)
        prgb, alpha, metal_w, bgs = (_blur_depth(x, sig, dof) for x in (prgb, alpha, metal_w, bgs))
        alpha = np.clip(alpha, 0, 1)
    scene_lin = bgs * (1 - alpha[..., None]) + prgb
    clean = np.clip(scene_lin, 0, 1).astype(np.float32)

    gains = cast_gains(kelvin, duv)
    radiance = scene_lin * illum[..., None] * (gains * 2.0 ** exposure).astype(np.float32)[None, None, :]

    # defects (source only): dust specks and lint fibres on piece and backdrop
    defects = np.zeros((h, w), np.uint8)
    drec = []
    if not _plate:
        occ = np.zeros((h, w), np.float32)
        for _ in range(int(cam_rng.integers(2, 7))):
            on_piece = cam_rng.random() < 0.5 and len(xs)
            if on_piece:
                j = int(cam_rng.integers(len(xs)))
                px, py = float(xs[j]), float(ys[j])
            else:
                px, py = cam_rng.uniform(8, w - 8), cam_rng.uniform(8, h - 8)
            rad = cam_rng.uniform(0.7, 2.6)
            m = np.zeros((h, w), np.float32)
            cv2.circle(m, (int(px * 16), int(py * 16)), int(rad * 16), 1.0, -1, cv2.LINE_AA, 4)
            m = cv2.GaussianBlur(m, (0, 0), 0.5) * cam_rng.uniform(0.5, 0.85)
            occ = np.maximum(occ, m)
            defects[m > 0.25] = 1
            drec.append({"kind": "dust", "xy": [px, py], "r": float(rad)})
        for _ in range(int(cam_rng.integers(0, 3))):
            p = np.array([cam_rng.uniform(20, w - 20), cam_rng.uniform(20, h - 20)])
            a = cam_rng.uniform(0, 2 * np.pi)
            pts = [p.copy()]
            for _ in range(int(cam_rng.integers(10, 30))):
                a += cam_rng.normal(0, 0.35)
                p = p + 2.2 * np.array([math.cos(a), math.sin(a)])
                pts.append(p.copy())
            m = np.zeros((h, w), np.float32)
            cv2.polylines(m, [np.round(np.array(pts) * 16).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 4)
            m = m * cam_rng.uniform(0.55, 0.9)
            occ = np.maximum(occ, m)
            defects[(m > 0.25) & (defects == 0)] = 2
            drec.append({"kind": "lint", "xy": [float(pts[0][0]), float(pts[0][1])], "length": len(pts)})
        dark = float(cam_rng.uniform(0.03, 0.12))  # speck colour under this light
        radiance = radiance * (1 - occ[..., None]) + dark * occ[..., None]
    iso = int(ISOS[int(rng.integers(4))]) if setup is None else setup.iso
    x = np.clip(radiance, 0, 1)
    full = 30000.0 * 100 / iso
    read = 0.0006 * math.sqrt(iso / 100)
    src = x + cam_rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(x / full + read * read).astype(np.float32)
    source = np.clip(src, 0, 1).astype(np.float32)
    jq = int(JPEG_QUALITIES[int(rng.integers(4))]) if setup is None else setup.jpeg_quality

    meta = {
        "generator": GENERATOR, "family": family, "piece": piece, "metal": metal, "stone": stone, "view": view,
        "finish": "satin" if satin else "polished", "studio": "tent" if studio.tent else "dark",
        "lighting": {"kelvin": kelvin, "tint": duv, "exposure": exposure, "falloff_stops": falloff,
                     "falloff": "radial" if radial else "linear", "vignette": vign, "seam": seam,
                     "shadow": "hard" if hard else "soft", "shadow_strength": sh_str,
                     "gains": [float(g) for g in gains]},
        "backdrop": bg_meta, "acrylic": acr, "iso": iso, "jpeg_quality": jq, "dof": dof,
        "size": [w, h], "seed": int(seed), "index": int(index), "box": [float(v) for v in box],
        "defects": drec, "plate": bool(_plate), **extra,
    }
    if setup is not None:
        meta.update(setup="shared", setup_params=setup.params)
    return Scene(source=source, clean=clean, alpha=alpha.astype(np.float32), defects=defects, details=details,
                 metal=metal_w.astype(np.float32), meta=meta)


def render_plate(seed: int, index: int, size=(1200, 800), family=None, setup: ShootSetup | None = None) -> Scene:
    """The same scene's empty set (no piece, shadow or reflection); same light and camera, own noise.
    With ``setup``: the shoot's clean plate of that shared setup (noise apart from every image's)."""
    return render(seed, index, size, family=family, setup=setup, _plate=True)


def write_shoot(out_dir, images: int, seed: int, size=(1200, 800), formats=("jpg", "tif", "dng"), plate=False,
                family=None, on_scene=None, setup="per_image") -> list[Path]:
    """Write ``images`` scenes as ``<SKU>_<view>.<ext>`` with truth under ``truth/<stem>/``.

    ``setup="per_image"`` (default): every image draws its own studio.  ``setup="shared"``: one
    :func:`shoot_setup` (backdrop, light, shadow direction/hardness, camera) for every image, only
    the piece changes; ``plate=True`` then writes that setup's empty backdrop as
    ``<folder>_plate.<formats[0]>`` (same writer, JPEG quality and size as the images)."""
    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {SETUPS}")
    shared = shoot_setup(seed, size, family) if setup == "shared" else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = tuple(formats)
    bad = [f for f in formats if f not in WRITERS]
    if not formats or bad:
        raise ValueError(f"formats must be a non-empty subset of {tuple(WRITERS)}")
    paths = []
    for k in range(int(images)):
        sc = render(seed, k, size, family=family, setup=shared)
        fmt = formats[k % len(formats)]
        stem = f"V{1000 + k}_{sc.meta['view']}"
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "jpg":
            write_jpeg_q(path, sc.source, sc.meta["jpeg_quality"])
        else:
            WRITERS[fmt](path, sc.source)
        meta = dict(sc.meta, format=fmt, stem=stem)
        write_truth(out_dir / "truth" / stem, sc, meta)
        paths.append(path)
        if on_scene is not None:
            on_scene(sc)
    if plate and shared is not None:
        pl = render_plate(seed, 0, size, setup=shared)
        ext = formats[0]
        p = out_dir / f"{out_dir.name}_plate.{ext}"
        if ext == "jpg":
            write_jpeg_q(p, pl.source, shared.jpeg_quality)
        else:
            WRITERS[ext](p, pl.source)
    elif plate:
        pl = render_plate(seed, 0, size, family=family)
        ext = "jpg" if "jpg" in formats or "tif" not in formats else "tif"
        p = out_dir / f"{out_dir.name}_plate.{ext}"
        if ext == "jpg":
            write_jpeg_q(p, pl.source, pl.meta["jpeg_quality"])
        else:
            WRITERS["tif"](p, pl.source)
    return paths


def contact_sheet(sources, cols=4, width=300) -> np.ndarray:
    thumbs = []
    for s in sources:
        hh = int(round(s.shape[0] * width / s.shape[1]))
        thumbs.append(cv2.resize(to_srgb(s), (width, hh), interpolation=cv2.INTER_AREA))
    th = max(t.shape[0] for t in thumbs)
    rows = []
    for i in range(0, len(thumbs), cols):
        row = [np.pad(t, ((0, th - t.shape[0]), (2, 2), (0, 0)), constant_values=0.1) for t in thumbs[i:i + cols]]
        row += [np.full((th, width + 4, 3), 0.1, np.float32)] * (cols - len(row))
        rows.append(np.pad(np.concatenate(row, 1), ((2, 2), (0, 0), (0, 0)), constant_values=0.1))
    return np.round(np.concatenate(rows, 0) * 255).astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--size", default="1200x800")
    ap.add_argument("--family", choices=list(FAMILIES))
    ap.add_argument("--plate", action="store_true")
    ap.add_argument("--setup", choices=SETUPS, default="per_image",
                    help="shared: one studio setup (backdrop, light, camera) for the whole shoot")
    ap.add_argument("--sheet", type=Path, help="also write a contact sheet (sRGB, 4 columns) of the sources")
    a = ap.parse_args(argv)
    size = tuple(int(v) for v in a.size.lower().split("x"))
    srcs = []
    paths = write_shoot(a.out, a.images, a.seed, size, plate=a.plate, family=a.family, setup=a.setup,
                        on_scene=(lambda s: srcs.append(s.source)) if a.sheet else None)
    if a.sheet:
        sheet = contact_sheet(srcs)
        a.sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(a.sheet), sheet[..., ::-1])
    print(f"wrote {len(paths)} images to {a.out}")


if __name__ == "__main__":
    main()
