"""Capture defects with exactly known positions.

Applied on top of the clean render (reflectance-level defects first, then the
light: uneven illumination and colour cast, then sensor noise):

* label 1 dust speck: dark grey soft blobs, radius 1-4 px, on background and metal
* label 2 lint fibre: thin (1 px) curved dark fibres, 15-60 px long
* label 3 fine scratch: light thin lines, only on polished metal
* label 4 fingerprint haze: low-contrast concentric ridges, only on polished metal
* label 5 sensor dust (only when asked for): soft dark discs, radius 4-15 px at 1536 px
  wide, 5-25 % darker at the centre, at the SAME frame position in every image of a
  shoot (the shadow of dust on the sensor). It multiplies the light, so it darkens
  backdrop and piece alike and may cover design details; it is labelled only where
  no other defect is, on pixels it darkens by 1 % or more.

Colour cast and uneven lighting are global and recorded in meta only
(``illuminant`` and ``lighting``); they are not in the label mask.

Relation between the written source and the clean truth (before noise/clipping)::

    source = defected_clean * illuminant.exposure * illuminant.rgb * lighting_gain(x, y)
             * sensor_dust_gain(meta["sensor_dust"], w, h)      # 1 without sensor dust

with ``lighting_gain`` the linear ramp described by ``meta["lighting"]``.
Defect pixels of labels 1-4 never touch design details (details.png, dilated by
2 px) and never overlap each other.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .scene import illuminant_gains

DUST, LINT, SCRATCH, FINGERPRINT, SENSOR_DUST = 1, 2, 3, 4, 5
DEFECT_NAMES = {DUST: "dust", LINT: "lint", SCRATCH: "scratch", FINGERPRINT: "fingerprint",
                SENSOR_DUST: "sensor_dust"}

_SHIFT = 4


def lighting_gain(meta_lighting: dict, w: int, h: int) -> np.ndarray:
    """Rebuild the multiplicative lighting field (HxW float32) from meta["lighting"]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = math.radians(meta_lighting["angle_deg"])
    dx, dy = math.cos(a), math.sin(a)
    p = (xx - w / 2) * dx + (yy - h / 2) * dy
    half = abs(w / 2 * dx) + abs(h / 2 * dy)
    t = (p / max(half, 1e-6) + 1) / 2  # 0 .. 1 across the frame
    lo, hi = meta_lighting["min"], meta_lighting["max"]
    return (lo + (hi - lo) * t).astype(np.float32)


def sensor_dust_spots(rng: np.random.Generator, n: int) -> list[dict]:
    """Draw ``n`` sensor-dust spots in normalised frame coordinates.

    Each spot: ``x``, ``y`` (centre, fractions of width and height), ``r`` (radius of
    the half-darkened edge, fraction of the long edge: 4-15 px at 1536 px), ``soft``
    (half-width of the soft edge, fraction of ``r``) and ``strength`` (darkening at
    the centre, 0.05-0.25). Spots keep clear of the frame edge and of each other.
    """
    spots: list[dict] = []
    for _ in range(int(n)):
        for _try in range(200):
            spot = {"x": float(rng.uniform(0.04, 0.96)), "y": float(rng.uniform(0.05, 0.95)),
                    "r": float(rng.uniform(4.0, 15.0) / 1536), "soft": float(rng.uniform(0.3, 0.7)),
                    "strength": float(rng.uniform(0.05, 0.25))}
            if all(math.hypot(spot["x"] - o["x"], spot["y"] - o["y"]) > 0.06 for o in spots):
                spots.append(spot)
                break
    return spots


def sensor_dust_gain(spots: list[dict], w: int, h: int) -> np.ndarray:
    """Multiplicative gain (HxW float32, 1 = untouched) of normalised sensor-dust spots.

    Profile per spot: ``1 - strength * smoothstep`` falling from full darkening inside
    ``r * (1 - soft)`` to none beyond ``r * (1 + soft)`` (edge at least 1.2 px wide).
    """
    gain = np.ones((h, w), np.float32)
    long_edge = max(w, h)
    for s in spots:
        cx, cy, r = s["x"] * w - 0.5, s["y"] * h - 0.5, s["r"] * long_edge
        half = max(s["soft"] * r, 1.2)
        reach = r + half + 1
        x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
        y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        t = np.clip((r + half - np.hypot(xx - cx, yy - cy)) / (2 * half), 0, 1)
        gain[y0:y1, x0:x1] *= 1 - s["strength"] * (t * t * (3 - 2 * t))
    return gain


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def apply_defects(rng: np.random.Generator, clean: np.ndarray, alpha: np.ndarray, metal: np.ndarray,
                  details: np.ndarray, *, enabled: bool = True, sensor_dust: list[dict] | None = None,
                  light: tuple[float, float, dict] | None = None):
    """Defected, lit, noisy source plus labels and meta; ``sensor_dust``: normalised spots
    (see :func:`sensor_dust_spots`) multiplied into the light before the sensor noise; ``light``:
    (kelvin, tint, lighting) of an earlier call's meta, the same light again (a clean plate)."""
    h, w = alpha.shape
    img = clean.copy()
    labels = np.zeros((h, w), np.uint8)
    records = []

    if enabled and light is not None:
        kelvin, tint, lighting = light
    elif enabled:
        kelvin = float(rng.uniform(2800, 7500))
        tint = float(rng.uniform(-0.04, 0.04))
        lighting = {"kind": "linear_ramp", "angle_deg": float(rng.uniform(0, 360)),
                    "min": float(rng.uniform(0.85, 0.95)), "max": 1.0}
    else:
        kelvin, tint = 6504.0, 0.0
        lighting = {"kind": "linear_ramp", "angle_deg": 0.0, "min": 1.0, "max": 1.0}
    gains = illuminant_gains(kelvin, tint) if enabled else np.ones(3)
    exposure = float(min(1.0, 1.0 / float(gains.max())))

    if enabled:
        forbidden = cv2.dilate((details > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        border = np.zeros((h, w), bool)
        border[4:-4, 4:-4] = True
        occupied = np.zeros((h, w), bool)
        polished = cv2.erode((metal > 0.95).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        polished &= ~forbidden & border
        bg_ok = (alpha < 0.02) & border & ~forbidden
        metal_ok = (metal > 0.6) & border & ~forbidden
        cand = {name: np.flatnonzero(m) for name, m in
                (("bg", bg_ok), ("metal", metal_ok), ("any", bg_ok | metal_ok), ("polished", polished))}

        def pick(name):
            c = cand[name]
            if len(c) == 0:
                return None
            i = int(c[int(rng.integers(len(c)))])
            return float(i % w) + rng.uniform(-0.5, 0.5), float(i // w) + rng.uniform(-0.5, 0.5)

        def window(p, r):
            x0, y0 = max(0, int(p[0] - r)), max(0, int(p[1] - r))
            x1, y1 = min(w, int(p[0] + r) + 2), min(h, int(p[1] + r) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            return (slice(y0, y1), slice(x0, x1)), xx, yy

        def accept(sl, lab, allowed):
            if not lab.any():
                return False
            if (lab & (forbidden[sl] | occupied[sl])).any():
                return False
            return not (lab & ~allowed[sl]).any()

        def commit(kind_id, sl, lab):
            labels[sl][lab] = kind_id
            occ = cv2.dilate(lab.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            occupied[sl] |= occ
            x, y, bw, bh = _bbox(lab)
            records.append({"kind": DEFECT_NAMES[kind_id], "x": x + sl[1].start, "y": y + sl[0].start,
                            "w": bw, "h": bh})

        def polyline_cov(sl, pts):
            m = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.uint8)
            arr = np.asarray(pts) - [sl[1].start, sl[0].start]
            arr = np.round(arr * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(m, [arr], False, 255, 1, cv2.LINE_AA, _SHIFT)
            return m.astype(np.float32) / 255

        # --- dust specks (on background and on metal)
        for _ in range(int(rng.integers(3, 16))):
            for _try in range(40):
                on_metal = rng.random() < 0.4 and len(cand["metal"]) > 0
                p = pick("metal" if on_metal else "bg")
                if p is None:
                    continue
                r = rng.uniform(1.0, 4.0)
                e = rng.uniform(0.6, 1.0)
                th = rng.uniform(0, np.pi)
                sl, xx, yy = window(p, r + 2)
                dx, dy = xx - p[0], yy - p[1]
                u = dx * math.cos(th) + dy * math.sin(th)
                v = (-dx * math.sin(th) + dy * math.cos(th)) / e
                cov = np.clip(r + 0.5 - np.sqrt(u * u + v * v), 0, 1)
                lab = cov > 0.15
                if not accept(sl, lab, metal_ok if on_metal else bg_ok):
                    continue
                op = rng.uniform(0.65, 0.95)
                grey = rng.uniform(0.03, 0.12)
                c = (cov * lab * op)[..., None]
                img[sl] = img[sl] * (1 - c) + grey * c
                commit(DUST, sl, lab)
                break

        # --- lint fibres (anywhere off the details)
        for _ in range(int(rng.integers(0, 4))):
            for _try in range(40):
                p = pick("any")
                if p is None:
                    break
                length = rng.uniform(15, 60)
                heading = rng.uniform(0, 2 * np.pi)
                curv = rng.uniform(-0.08, 0.08)
                pts = [p]
                for _s in range(int(length)):
                    heading += curv + rng.normal(0, 0.05)
                    pts.append((pts[-1][0] + math.cos(heading), pts[-1][1] + math.sin(heading)))
                sl, _, _ = window(p, length + 3)
                cov = polyline_cov(sl, pts)
                lab = cov > 0.15
                if not accept(sl, lab, border):
                    continue
                op = rng.uniform(0.6, 0.9)
                grey = rng.uniform(0.04, 0.15)
                c = (cov * lab * op)[..., None]
                img[sl] = img[sl] * (1 - c) + grey * c
                commit(LINT, sl, lab)
                break

        # --- fine scratches on polished metal
        for _ in range(int(rng.integers(0, 4))):
            for _try in range(40):
                p = pick("polished")
                if p is None:
                    break
                length = rng.uniform(8, 35)
                heading = rng.uniform(0, 2 * np.pi)
                bend = rng.uniform(-0.03, 0.03)
                pts = [p]
                for _s in range(int(length)):
                    heading += bend
                    pts.append((pts[-1][0] + math.cos(heading), pts[-1][1] + math.sin(heading)))
                sl, _, _ = window(p, length + 3)
                cov = polyline_cov(sl, pts) * polished[sl]
                lab = cov > 0.15
                if lab.sum() < 6 or not accept(sl, lab, polished):
                    continue
                c = (cov * lab * rng.uniform(0.35, 0.6))[..., None]
                img[sl] = img[sl] * (1 - c) + np.minimum(1.0, img[sl] * 1.3 + 0.35) * c
                commit(SCRATCH, sl, lab)
                break

        # --- fingerprint haze on polished metal
        if rng.random() < 0.6 and len(cand["polished"]) > 400:
            for _try in range(40):
                p = pick("polished")
                ra = rng.uniform(8, 22)
                rb = ra * rng.uniform(0.6, 0.9)
                th = rng.uniform(0, np.pi)
                sl, xx, yy = window(p, ra + 2)
                dx, dy = xx - p[0], yy - p[1]
                u = dx * math.cos(th) + dy * math.sin(th)
                v = -dx * math.sin(th) + dy * math.cos(th)
                rr = np.sqrt((u / ra) ** 2 + (v / rb) ** 2)
                fall = np.clip(1 - rr, 0, 1) ** 0.7
                region = (fall > 0.05) & polished[sl]
                if region.sum() < 0.4 * math.pi * ra * rb or not accept(sl, region, polished):
                    continue
                period = rng.uniform(2.4, 3.4)
                ridges = 0.5 + 0.5 * np.sin(2 * np.pi * rr * ra / period + 0.6 * np.sin(4 * np.arctan2(v, u)))
                a = (rng.uniform(0.12, 0.22) * (0.35 + 0.65 * ridges) * fall * region)[..., None]
                lum = img[sl].mean(axis=2, keepdims=True)
                img[sl] = img[sl] * (1 - a) + (0.6 * lum + 0.2) * a
                commit(FINGERPRINT, sl, region)
                break

    gain = lighting_gain(lighting, w, h)
    src = img * (np.asarray(gains, np.float32) * exposure)[None, None, :] * gain[..., None]
    dust_meta = []
    if sensor_dust:
        dust_gain = sensor_dust_gain(sensor_dust, w, h)
        src = src * dust_gain[..., None]
        for s in sensor_dust:
            one = sensor_dust_gain([s], w, h) < 0.99
            labels[one & (labels == 0)] = SENSOR_DUST
            if one.any():
                x, y, bw, bh = _bbox(one)
                records.append({"kind": DEFECT_NAMES[SENSOR_DUST], "x": x, "y": y, "w": bw, "h": bh})
            # px, py: centre in pixel-index coordinates; pr: radius in px
            dust_meta.append({**s, "px": s["x"] * w - 0.5, "py": s["y"] * h - 0.5, "pr": s["r"] * max(w, h)})
    # mild sensor noise (shot + read), deterministic from rng
    sigma = np.sqrt(0.00012 * np.clip(src, 0, 1) + 0.0012 ** 2).astype(np.float32)
    src = src + sigma * rng.standard_normal(src.shape, dtype=np.float32)
    src = np.clip(src, 0, 1).astype(np.float32)

    meta = {
        "illuminant": {"kelvin": kelvin, "tint": tint, "rgb": [float(g) for g in gains], "exposure": exposure},
        "lighting": lighting,
        "defects": records,
    }
    if sensor_dust:
        meta["sensor_dust"] = dust_meta
    return src, labels, meta
