"""Training samples for :mod:`models.segnet`: simulator pieces on cluttered backgrounds.

Every sample is a pure function of ``(seed, index)`` (:func:`sample_rng`), so a pool
of samples is reproducible whatever the number of worker processes.

Two recipes:

* ``native``: a simulator scene as the camera saw it (``scene.source``) on one of the
  four simulator backgrounds, randomly cropped.
* composite: the piece layer of a simulator scene (premultiplied colour + matte,
  recovered from ``scene.clean``), scaled/rotated/moved onto a procedural background
  (skin/hands, fabric, marble, wood desk, coloured clutter, gradients, sweeps), then
  re-lit through the simulator's own ``apply_defects`` (dust, colour cast, uneven
  light, noise).

Both then get a random camera: per-channel gains, exposure, blur, noise; finally the
linear image is sRGB encoded.  Output: ``image`` uint8 HxWx3 sRGB, ``alpha`` uint8
HxW (soft truth matte * 255), ``kind`` str.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from models.simulator import BACKGROUNDS, linear_to_srgb, render_scene
from models.simulator.defects import apply_defects
from models.simulator.scene import _hsv_to_lin, _lowfreq_noise, render_background

# composite background kinds and their sampling weights
COMPOSITE_KINDS = {
    "skin": 0.22,
    "fabric": 0.16,
    "marble": 0.10,
    "wood": 0.14,
    "clutter": 0.16,
    "gradient": 0.08,
    "sweep": 0.14,
}
KINDS = tuple(f"native_{b}" for b in BACKGROUNDS) + tuple(COMPOSITE_KINDS)
P_NATIVE = 0.35
# "hard" profile (fine-tuning): fewer native scenes, more hands (with nails, mostly on sweeps),
# more marble and distractor clutter
HARD_KINDS = {"skin": 0.35, "fabric": 0.1, "marble": 0.15, "wood": 0.1, "clutter": 0.12, "gradient": 0.05,
              "sweep": 0.13}
P_NATIVE_HARD = 0.15
# "wide" profile: most samples are native scenes of the simulator's wide studio world
# (``render_scene(..., world="wide")``: beige/kraft/coloured papers, light boxes, acrylic
# risers with the piece's reflection, hard shadows, white metal on white, chains everywhere,
# camera noise/JPEG), the rest the default recipe's natives and composites
P_WIDE = 0.65
P_NATIVE_IN_WIDE = 0.1
# emphasis of the wide samples: hard cases drawn on purpose (backdrop, piece, metal), else free
WIDE_FOCUS = (
    (0.12, dict(background="white_sweep", metal="white_gold")),
    (0.08, dict(background="white_sweep", metal="silver")),
    (0.10, dict(background="light_box")),
    (0.14, dict(background="acrylic")),
    (0.12, dict(piece="chain")),
    (0.06, dict(background="kraft_paper")),
    (0.06, dict(background="beige_paper")),
)
SAMPLE_SIZE = (256, 256)  # (w, h) of a training sample
RENDER_SIZE = (384, 256)  # (w, h) of the simulator render (the net runs at ~384 px long edge)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of sample ``index`` of pool ``seed`` (independent of pool size)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x5E6]))


# --------------------------------------------------------------------------------------
# procedural backgrounds (linear RGB float32 HxWx3)
# --------------------------------------------------------------------------------------
def _hsv(rng, h=(0, 360), s=(0, 1), v=(0, 1)):
    return _hsv_to_lin(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))


def _noise(rng, h, w, cells, octaves=3):
    n = _lowfreq_noise(rng, h, w, cells, octaves)
    return n / (n.std() + 1e-6)


def _grad(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    t = (np.cos(a) * xx / w + np.sin(a) * yy / h)
    return (t - t.min()) / (np.ptp(t) + 1e-6)


def bg_gradient(rng, h, w):
    c0, c1 = _hsv(rng), _hsv(rng)
    t = _grad(rng, h, w)
    if rng.random() < 0.4:  # radial
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.clip(np.hypot(xx - cx, yy - cy) / (rng.uniform(0.4, 1.2) * max(h, w)), 0, 1)
    return c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]


_FABRIC_COLOURS = [  # sRGB-ish hsv ranges: black, navy, cream, red, grey, random
    ((0, 360), (0, 0.3), (0.05, 0.2)),
    ((215, 240), (0.5, 0.9), (0.15, 0.45)),
    ((35, 50), (0.1, 0.3), (0.75, 0.95)),
    ((350, 365), (0.6, 0.95), (0.3, 0.75)),
    ((0, 360), (0, 0.1), (0.3, 0.8)),
    ((0, 360), (0.2, 0.9), (0.2, 0.9)),
]


def bg_fabric(rng, h, w):
    col = _hsv(rng, *_FABRIC_COLOURS[int(rng.integers(len(_FABRIC_COLOURS)))])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    style = int(rng.integers(3))
    if style == 0:  # woven: crossed sinusoids, slightly warped
        ang = rng.uniform(0, np.pi)
        u = np.cos(ang) * xx + np.sin(ang) * yy + 3 * _noise(rng, h, w, 4, 2)
        v = -np.sin(ang) * xx + np.cos(ang) * yy + 3 * _noise(rng, h, w, 4, 2)
        p = rng.uniform(2.0, 6.0)
        weave = np.sin(2 * np.pi * u / p) * np.sin(2 * np.pi * v / p)
        lvl = 1 + rng.uniform(0.08, 0.3) * weave + 0.1 * _noise(rng, h, w, 6, 2)
    elif style == 1:  # velvet: deep smooth folds with sheen
        n = _noise(rng, h, w, rng.uniform(2, 5), 2)
        lvl = np.clip(1 + 0.45 * n, 0.15, 2.5) ** rng.uniform(1, 2.5)
    else:  # linen: anisotropic fibre noise
        L = int(math.hypot(h, w)) + 4
        fib = cv2.resize(rng.standard_normal((L, max(2, L // int(rng.integers(20, 60))))).astype(np.float32),
                         (L, L), interpolation=cv2.INTER_LINEAR)
        fib2 = cv2.resize(rng.standard_normal((max(2, L // 30), L)).astype(np.float32), (L, L),
                          interpolation=cv2.INTER_LINEAR)
        M = cv2.getRotationMatrix2D((L / 2, L / 2), rng.uniform(0, 180), 1.0)
        M[:, 2] -= [(L - w) / 2, (L - h) / 2]
        f = cv2.warpAffine(0.6 * fib + 0.4 * fib2, M, (w, h), borderMode=cv2.BORDER_REFLECT)
        lvl = 1 + rng.uniform(0.05, 0.2) * f + 0.12 * _noise(rng, h, w, 3, 2)
    return col[None, None] * np.clip(lvl, 0.05, 3)[..., None]


def bg_marble(rng, h, w):
    base = _hsv(rng, (0, 360), (0, 0.15), (0.1, 0.95) if rng.random() < 0.3 else (0.7, 0.95))
    vein = _hsv(rng, (0, 360), (0, 0.3), (0.05, 0.6))
    if rng.random() < 0.3:
        vein = _hsv(rng, (30, 50), (0.3, 0.7), (0.6, 0.95))  # gold veins
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    t = (np.cos(ang) * xx + np.sin(ang) * yy) / max(h, w)
    warp = _noise(rng, h, w, 3, 3) * rng.uniform(0.5, 1.5)
    s = np.abs(np.sin(2 * np.pi * (t * rng.uniform(1, 4) + warp)))
    veins = np.exp(-s * rng.uniform(6, 25)) * rng.uniform(0.4, 0.9)
    cloud = 1 + 0.06 * _noise(rng, h, w, 8, 3)
    return (base[None, None] * (1 - veins[..., None]) + vein[None, None] * veins[..., None]) * cloud[..., None]


def _capsule_cov(h, w, p0, p1, r, soft=1.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    L2 = max(vx * vx + vy * vy, 1e-6)
    t = np.clip(((xx - p0[0]) * vx + (yy - p0[1]) * vy) / L2, 0, 1)
    d = np.hypot(xx - p0[0] - t * vx, yy - p0[1] - t * vy)
    return np.clip((r - d) / soft + 0.5, 0, 1).astype(np.float32), np.clip(1 - d / max(r, 1e-3), 0, 1)


def _skin_colour(rng):
    return _hsv(rng, (5, 32), (0.2, 0.6), (0.3, 0.97))


def _skin_layer(rng, cov, depth, col):
    """Shaded skin colour for a coverage/depth map (depth 1 at the axis, 0 at the rim)."""
    h, w = cov.shape
    shade = 0.55 + 0.45 * np.sqrt(np.clip(depth, 0, 1))
    tex = 1 + 0.04 * _noise(rng, h, w, 20, 2)
    redness = 1 + 0.15 * np.clip(_noise(rng, h, w, 3, 1), -1, 1)
    rgb = col[None, None] * (shade * tex)[..., None]
    rgb[..., 0] *= redness
    return np.clip(rgb, 0, 1)


def draw_hand(rng, h, w):
    """Palm ellipse + 2-5 finger capsules. Returns (coverage, depth, finger axes)."""
    cov = np.zeros((h, w), np.float32)
    depth = np.zeros((h, w), np.float32)
    s = max(h, w) * rng.uniform(0.6, 1.6)
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    palm = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h]) - d * s * 0.35
    fingers = []
    nf = int(rng.integers(2, 6))
    fr = s * rng.uniform(0.045, 0.07)
    for k in range(nf):
        off = (k - (nf - 1) / 2) * fr * rng.uniform(2.1, 2.6)
        a0 = palm + n * off + d * s * 0.1
        fa = ang + rng.uniform(-0.25, 0.25) + 0.08 * (k - (nf - 1) / 2)
        fd = np.array([math.cos(fa), math.sin(fa)])
        a1 = a0 + fd * s * rng.uniform(0.3, 0.5)
        r = fr * rng.uniform(0.85, 1.15)
        c, dd = _capsule_cov(h, w, a0, a1, r, soft=rng.uniform(0.8, 2.5))
        cov = np.maximum(cov, c)
        depth = np.maximum(depth, dd)
        fingers.append((a0, a1, r))
    # palm / back of hand
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - palm[0]) * d[0] + (yy - palm[1]) * d[1]
    v = (xx - palm[0]) * n[0] + (yy - palm[1]) * n[1]
    ra, rb = s * 0.32, fr * nf * 1.25 + fr
    e = np.sqrt((u / ra) ** 2 + (v / rb) ** 2)
    c = np.clip((1 - e) * min(ra, rb) / 1.5 + 0.5, 0, 1)
    cov = np.maximum(cov, c)
    depth = np.maximum(depth, np.clip(1 - e, 0, 1) ** 0.5)
    return cov, depth, fingers


def _hand_details(rng, rgb, cov, fingers, col):
    """Finger nails (pale pink caps at the tips) and knuckle creases (thin dark arcs)."""
    h, w = cov.shape
    for a0, a1, r in fingers:
        d = (a1 - a0) / (np.linalg.norm(a1 - a0) + 1e-6)
        nail = np.zeros((h, w), np.uint8)
        c = a1 - d * r * 0.35
        cv2.ellipse(nail, (int(c[0] * 16), int(c[1] * 16)), (int(r * 0.65 * 16), int(r * 0.85 * 16)),
                    math.degrees(math.atan2(d[1], d[0])), 0, 360, 255, -1, cv2.LINE_AA, 4)
        nm = (nail.astype(np.float32) / 255 * cov)[..., None]
        ncol = np.clip(col * np.array([1.15, 0.95, 1.0]) * rng.uniform(1.0, 1.3), 0, 1).astype(np.float32)
        rgb = rgb * (1 - nm * 0.8) + ncol[None, None] * nm * 0.8
        crease = np.zeros((h, w), np.uint8)
        for t in rng.uniform(0.3, 0.75, int(rng.integers(1, 3))):
            p = a0 + (a1 - a0) * t
            cv2.ellipse(crease, (int(p[0] * 16), int(p[1] * 16)), (int(r * 0.7 * 16), int(r * 0.25 * 16)),
                        math.degrees(math.atan2(d[1], d[0])) + 90, 0, 360, 255, 1, cv2.LINE_AA, 4)
        cm = (cv2.GaussianBlur(crease.astype(np.float32) / 255, (0, 0), 0.7) * cov)[..., None]
        rgb = rgb * (1 - 0.25 * cm)
    return rgb


def bg_skin(rng, h, w, under, details=False):
    """A hand (or two) over the background ``under``."""
    out = under.copy()
    fingers_all = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        col = _skin_colour(rng)
        cov, depth, fingers = draw_hand(rng, h, w)
        rgb = _skin_layer(rng, cov, depth, col)
        if details:
            rgb = _hand_details(rng, rgb, cov, fingers, col)
        # soft shadow of the hand on the surface
        sh = cv2.GaussianBlur(cov, (0, 0), max(h, w) * 0.02)
        out = out * (1 - 0.35 * np.roll(sh, int(h * 0.02), 0))[..., None]
        out = out * (1 - cov[..., None]) + rgb * cov[..., None]
        fingers_all += [(f, col) for f in fingers]
    return out, fingers_all


def add_clutter(rng, img, n=None, border_only=False):
    h, w = img.shape[:2]
    n = int(rng.integers(2, 9)) if n is None else n
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        if border_only:
            if rng.random() < 0.5:
                cx = rng.choice([rng.uniform(-0.1, 0.12), rng.uniform(0.88, 1.1)]) * w
            else:
                cy = rng.choice([rng.uniform(-0.1, 0.12), rng.uniform(0.88, 1.1)]) * h
        sz = rng.uniform(0.04, 0.3) * max(h, w)
        shape = int(rng.integers(4))
        if shape == 0:
            cv2.ellipse(m, (int(cx), int(cy)), (int(sz), int(sz * rng.uniform(0.3, 1))), rng.uniform(0, 180),
                        0, 360, 255, -1, cv2.LINE_AA)
        elif shape == 1:
            box = cv2.boxPoints(((cx, cy), (sz * 2, sz * rng.uniform(0.2, 1.5)), rng.uniform(0, 180)))
            cv2.fillPoly(m, [np.round(box).astype(np.int32)], 255, cv2.LINE_AA)
        elif shape == 2:  # pen / cable: a long line
            a = rng.uniform(0, np.pi)
            p0 = (int(cx - math.cos(a) * sz * 2), int(cy - math.sin(a) * sz * 2))
            p1 = (int(cx + math.cos(a) * sz * 2), int(cy + math.sin(a) * sz * 2))
            cv2.line(m, p0, p1, 255, max(1, int(sz * rng.uniform(0.03, 0.2))), cv2.LINE_AA)
        else:  # polygon
            k = int(rng.integers(3, 7))
            pts = np.stack([cx + sz * rng.uniform(0.3, 1, k) * np.cos(np.sort(rng.uniform(0, 2 * np.pi, k))),
                            cy + sz * rng.uniform(0.3, 1, k) * np.sin(np.sort(rng.uniform(0, 2 * np.pi, k)))], 1)
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
        cov = m.astype(np.float32) / 255
        blur = rng.choice([0.0, 0.0, rng.uniform(0.5, 2), rng.uniform(2, 12)])
        if blur > 0:
            cov = cv2.GaussianBlur(cov, (0, 0), blur)
        col = _hsv(rng)
        if rng.random() < 0.25:  # glossy grey/white object (distractor): smooth gradient + highlight
            g = _grad(rng, h, w)
            rgb = (rng.uniform(0.2, 0.8) * (0.5 + g))[..., None] * np.ones(3, np.float32)
        else:
            rgb = col[None, None] * (0.8 + 0.4 * _grad(rng, h, w))[..., None]
        # cast shadow
        if rng.random() < 0.5:
            sh = cv2.GaussianBlur(np.roll(cov, int(sz * 0.1), 0), (0, 0), sz * 0.15 + 1)
            img = img * (1 - 0.3 * sh)[..., None]
        img = img * (1 - cov[..., None]) + rgb * cov[..., None]
    return img


def background(rng, kind, h, w, hard=False):
    """Procedural background of composite ``kind``. Returns (linear RGB, hand fingers or []).

    ``hard``: hands carry nails/creases and usually lie on a sweep; more distractor clutter."""
    fingers = []
    if kind == "wood":
        bg = render_background(rng, "textured_desk", w, h)[0]
    elif kind == "sweep":
        bg = render_background(rng, BACKGROUNDS[int(rng.integers(3))], w, h)[0]
    elif kind == "fabric":
        bg = bg_fabric(rng, h, w)
    elif kind == "marble":
        bg = bg_marble(rng, h, w)
    elif kind == "gradient":
        bg = bg_gradient(rng, h, w)
    elif kind == "clutter":
        base = [bg_gradient, bg_fabric, bg_marble][int(rng.integers(3))](rng, h, w)
        bg = add_clutter(rng, base)
    elif kind == "skin":
        under_kind = ["sweep", "wood", "fabric", "gradient", "marble"][int(rng.integers(5))]
        if hard and rng.random() < 0.6:
            under_kind = "sweep"
        under, _ = background(rng, under_kind, h, w)
        bg, fingers = bg_skin(rng, h, w, under, details=hard)
    else:
        raise ValueError(kind)
    if kind not in ("clutter", "skin") and rng.random() < (0.6 if hard else 0.3):
        bg = add_clutter(rng, bg, n=int(rng.integers(1, 4)), border_only=rng.random() < 0.5)
    return np.clip(bg, 0, 1).astype(np.float32), fingers


# --------------------------------------------------------------------------------------
# piece layer
# --------------------------------------------------------------------------------------
def piece_layer(scene):
    """Premultiplied piece colour (HxWx3 linear), alpha, metal and details of a scene.

    ``scene.clean = bg * (1 - alpha) + colour``; the background under fractional edge
    pixels is estimated from nearby alpha == 0 pixels (normalised convolution).
    """
    a = scene.alpha
    clean = scene.clean
    known = (a <= 1e-4).astype(np.float32)
    bg = np.zeros_like(clean)
    wsum = np.zeros_like(a)
    for sigma in (2.0, 8.0):
        num = cv2.GaussianBlur(clean * known[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(known, (0, 0), sigma)
        take = (wsum < 1e-3) & (den > 1e-3)
        bg[take] = num[take] / den[take][..., None]
        wsum[take] = 1.0
    colour = np.clip(clean - bg * (1 - a)[..., None], 0, None)
    colour = np.minimum(colour, a[..., None] * 1.5)  # premultiplied: bounded by coverage
    return colour.astype(np.float32), a, scene.metal, scene.details


def _place(rng, layers, h, w, scale):
    """Random rotation/scale/translation of same-size layers onto an h x w frame."""
    H, W = layers[0].shape[:2]
    a = layers[1]
    ys, xs = np.nonzero(a > 0.01)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    ang = rng.uniform(0, 360) if rng.random() < 0.7 else rng.uniform(-20, 20)
    M = cv2.getRotationMatrix2D((float(cx), float(cy)), ang, scale)
    ext = max(xs.max() - xs.min(), ys.max() - ys.min()) * scale / 2
    tx = rng.uniform(min(ext * 0.7, w / 2), max(w - ext * 0.7, w / 2))
    ty = rng.uniform(min(ext * 0.7, h / 2), max(h - ext * 0.7, h / 2))
    M[:, 2] += [tx - cx, ty - cy]
    out = []
    for i, L in enumerate(layers):
        interp = cv2.INTER_AREA if scale < 0.7 and i < 3 else cv2.INTER_LINEAR
        if scale < 0.7 and i < 3:  # pre-shrink with area filter, then warp the rest
            Ls = cv2.resize(L, (max(1, int(round(W * scale))), max(1, int(round(H * scale)))), interpolation=interp)
            S = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0], [0, 0, 1]], np.float64)
            M2 = (np.vstack([M, [0, 0, 1]]) @ S)[:2]
            out.append(cv2.warpAffine(Ls, M2, (w, h), flags=cv2.INTER_LINEAR, borderValue=0))
        else:
            flags = cv2.INTER_NEAREST if i == 3 else cv2.INTER_LINEAR
            out.append(cv2.warpAffine(L, M, (w, h), flags=flags, borderValue=0))
    return out


# --------------------------------------------------------------------------------------
# camera augmentation and the sample itself
# --------------------------------------------------------------------------------------
def camera(rng, img):
    """Random colour cast, exposure, blur and noise on a linear image."""
    gains = rng.uniform(0.5, 1.8, 3) if rng.random() < 0.6 else rng.uniform(0.85, 1.15, 3)
    gains = gains / max(gains.max(), 1.0) * rng.uniform(0.9, 1.3) if rng.random() < 0.5 else gains
    img = img * gains.astype(np.float32)[None, None] * float(np.exp(rng.uniform(-0.7, 0.45)))
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.3))
    if rng.random() < 0.6:
        sigma = rng.uniform(0.002, 0.02)
        img = img + sigma * rng.standard_normal(img.shape).astype(np.float32) * np.sqrt(np.clip(img, 0.02, 1))
    return np.clip(img, 0, 1).astype(np.float32)


def _crop(rng, arrs, w, h):
    H, W = arrs[0].shape[:2]
    x0 = int(rng.integers(0, W - w + 1))
    y0 = int(rng.integers(0, H - h + 1))
    return [a[y0:y0 + h, x0:x0 + w] for a in arrs]


def make_sample(seed: int, index: int, size=SAMPLE_SIZE, profile: str = "default") -> dict:
    """Sample ``index`` of pool ``seed``: dict(image uint8 HxWx3 sRGB, alpha uint8 HxW, kind).

    ``profile``: "default" or "hard" (see ``HARD_KINDS``)."""
    if profile not in ("default", "hard", "wide"):
        raise ValueError(f"unknown profile {profile!r}")
    hard = profile == "hard"
    rng = sample_rng(seed, index)
    w, h = size
    if profile == "wide":
        r = rng.random()
        if r < P_WIDE:
            img, alpha, kind = _wide_native(rng, w, h)
            return _finish(rng, img, alpha, kind)
        if r < P_WIDE + P_NATIVE_IN_WIDE:
            bgk = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
            scene = render_scene(rng, RENDER_SIZE, background=bgk)
            img, alpha = _crop(rng, [scene.source, scene.alpha], w, h)
            return _finish(rng, camera(rng, img) if rng.random() < 0.5 else img, alpha, f"native_{bgk}")
    if rng.random() < (P_NATIVE_HARD if hard else P_NATIVE):
        bgk = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        scene = render_scene(rng, RENDER_SIZE, background=bgk)
        img, alpha = _crop(rng, [scene.source, scene.alpha], w, h)
        if rng.random() < 0.5:
            img = camera(rng, img)
        kind = f"native_{bgk}"
    else:
        table = HARD_KINDS if hard else COMPOSITE_KINDS
        kinds = list(table)
        p = np.array([table[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        scene = render_scene(rng, RENDER_SIZE, defects=False)
        colour, a, metal, details = piece_layer(scene)
        scale = float(np.exp(rng.uniform(math.log(0.25), math.log(1.1))))
        colour, a, metal, details = _place(rng, [colour, a, metal, details], h, w, scale)
        a = np.clip(a, 0, 1)
        bg, fingers = background(rng, kind, h, w, hard=hard)
        # soft contact shadow of the piece
        if rng.random() < 0.7:
            sh = cv2.GaussianBlur(np.roll(a, int(rng.integers(0, 4)), 0), (0, 0), rng.uniform(1, 6))
            bg = bg * (1 - rng.uniform(0.1, 0.45) * np.clip(sh, 0, 1))[..., None]
        clean = bg * (1 - a[..., None]) + colour
        if kind == "skin" and rng.random() < 0.5:
            # a finger in front of part of the piece (ring worn on a finger): hides part of it
            yy, xx = np.nonzero(a > 0.5)
            if len(yy):
                i = int(rng.integers(len(yy)))
                c = np.array([xx[i], yy[i]], np.float64)
                fa = rng.uniform(0, np.pi)
                fd = np.array([math.cos(fa), math.sin(fa)])
                r = rng.uniform(0.03, 0.12) * max(h, w)
                cov, depth = _capsule_cov(h, w, c - fd * 3 * r, c + fd * 3 * r, r, soft=rng.uniform(0.8, 2))
                rgb = _skin_layer(rng, cov, depth, _skin_colour(rng))
                clean = clean * (1 - cov[..., None]) + rgb * cov[..., None]
                a = a * (1 - cov)
                metal = metal * (1 - cov)
        img, _, _ = apply_defects(rng, np.clip(clean, 0, 1).astype(np.float32), a.astype(np.float32),
                                  metal.astype(np.float32), details.astype(np.uint8), enabled=True)
        img = camera(rng, img)
        alpha = a
    return _finish(rng, img, alpha, kind)


def _finish(rng, img, alpha, kind):
    if rng.random() < 0.5:
        img, alpha = img[:, ::-1], alpha[:, ::-1]
    srgb = np.round(linear_to_srgb(img) * 255).astype(np.uint8)
    return {"image": np.ascontiguousarray(srgb), "alpha": np.ascontiguousarray(
        np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)), "kind": kind}


def _wide_native(rng, w, h):
    """A wide-world scene (a hard case on purpose about two thirds of the time), cropped."""
    r, force = rng.random(), {}
    for p, f in WIDE_FOCUS:
        if r < p:
            force = f
            break
        r -= p
    scene = render_scene(rng, RENDER_SIZE, world="wide", **force)
    img, alpha = _crop(rng, [scene.source, scene.alpha], w, h)
    if rng.random() < 0.25:
        img = camera(rng, img)
    return img, alpha, "wide_" + scene.meta["studio"]["backdrop"]


def make_pool(seed: int, count: int, start: int = 0, size=SAMPLE_SIZE, workers: int = 2, profile="default"):
    """Samples ``start .. start+count-1`` of pool ``seed`` as stacked arrays (N,H,W,3), (N,H,W), kinds."""
    idx = list(range(start, start + count))
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.starmap(make_sample, [(seed, i, size, profile) for i in idx], chunksize=8)
    else:
        out = [make_sample(seed, i, size, profile) for i in idx]
    return (np.stack([o["image"] for o in out]), np.stack([o["alpha"] for o in out]),
            [o["kind"] for o in out])
