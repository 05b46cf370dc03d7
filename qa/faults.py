"""Retouch faults injected into a clean run, to calibrate and test the QA gate.

Each fault is a pure function ``(reference, result, ...) -> (reference, result)``
on the two frames QA reads (``reference``: the frame right after neutralize;
``result``: the final frame with ``alpha``, ``foreground`` and masks). It
changes what a broken retouch would have changed and recomposes the output
(``image = alpha * foreground + (1 - alpha) * backdrop``) so every metric sees a
consistent frame. A fault that cannot be applied to an image (no thin
structure to chop, no metal or stone to shift) returns ``None``.

``FAULTS`` maps each fault's name to the stable reason code QA must raise:

| fault | what it does | reason |
|---|---|---|
| ``oversmooth`` | Gaussian (sigma 1.5 px) over the piece: milgrain, pave, engraving go soft | ``detail_loss`` |
| ``hue_metal`` | rotates the metal's CIELAB hue (``masks['metal']``) by 6 degrees | ``color_drift`` |
| ``hue_stone`` | rotates the stones' hue (``masks['stones']``) by 8 degrees | ``color_drift`` |
| ``chop`` | cuts the matte across a thin structure (chain wire, prong, hook), 12 px radius | ``mask_suspect`` |
| ``cast`` | a cast neutralize left in: 7% warm/cool/green/magenta gains on the whole neutralized frame and so on the output | ``color_cast`` |
| ``halo`` | alpha bleeding: a 4 px fringe of the old backdrop (alpha 0.45 fading out) around the piece | ``mask_suspect`` |
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from tasks import regions
from tasks.color import D65_XYZ, LUMINANCE, rgb_to_lab, xyz_to_rgb
from tasks.frame import Frame
from tasks.ops import masked_blur

FAULTS: dict[str, str] = {
    "oversmooth": "detail_loss",
    "hue_metal": "color_drift",
    "hue_stone": "color_drift",
    "chop": "mask_suspect",
    "cast": "color_cast",
    "halo": "mask_suspect",
}

# per-channel gains of the casts ``cast`` draws from (luminance kept)
CASTS = {"warm": (1.07, 1.0, 0.93), "cool": (0.93, 1.0, 1.07), "green": (0.95, 1.05, 0.95),
         "magenta": (1.05, 0.95, 1.05)}

Pair = tuple[Frame, Frame]


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (D65) ``(B, 3, H, W)`` to linear sRGB; inverse of ``tasks.color.rgb_to_lab``."""
    fy = (lab[:, 0:1] + 16) / 116
    fx = fy + lab[:, 1:2] / 500
    fz = fy - lab[:, 2:3] / 200
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.cat([fx, fy, fz], 1)
    xyz = torch.where(f ** 3 > eps, f ** 3, (116 * f - 16) / kappa)
    return xyz_to_rgb(xyz * lab.new_tensor(D65_XYZ).view(1, 3, 1, 1))


def rotate_hue(rgb: torch.Tensor, degrees: float, weight: torch.Tensor) -> torch.Tensor:
    """Rotate the CIELAB hue of ``rgb`` by ``degrees``, blended by ``weight`` ``(B, 1, H, W)`` in [0, 1]."""
    lab = rgb_to_lab(rgb)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    a, b = lab[:, 1:2], lab[:, 2:3]
    rotated = lab_to_rgb(torch.cat([lab[:, 0:1], c * a - s * b, s * a + c * b], 1)).clamp(0, 1)
    return weight * rotated + (1 - weight) * rgb


def _parts(result: Frame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, foreground, backdrop) of a final frame; backdrop from ``image = a*fg + (1-a)*bd``."""
    alpha = result.alpha
    fg = result.foreground if result.foreground is not None else result.image
    clear = alpha[:, 0] < 1e-6
    if bool(clear.any()):
        colour = result.image.permute(0, 2, 3, 1)[clear].median(0).values
    else:
        colour = result.image.new_ones(3)
    return alpha, fg, colour.view(1, 3, 1, 1).expand_as(fg)


def _recompose(result: Frame, alpha: torch.Tensor, fg: torch.Tensor) -> Frame:
    _, old_fg, backdrop = _parts(result)
    image = alpha * fg + (1 - alpha) * backdrop
    return result.replace(image=image, alpha=alpha, foreground=fg)


def oversmooth(reference: Frame, result: Frame, sigma: float = 1.5) -> Pair:
    """Blur the piece (normalised by the matte, so no backdrop bleeds in): fine detail erased."""
    alpha, fg, _ = _parts(result)
    piece = (alpha > 0.5).to(fg.dtype)
    blurred, _ = masked_blur(fg, piece, sigma)
    return reference, _recompose(result, alpha, torch.where(piece > 0, blurred, fg))


def hue_shift(reference: Frame, result: Frame, degrees: float, layer: str) -> Pair | None:
    """Rotate the hue of ``masks[layer]`` (``metal`` or ``stones``) by ``degrees``; None without that layer."""
    mask = result.masks.get(layer)
    if mask is None or float((mask > 0.5).sum()) < 16:
        return None
    alpha, fg, _ = _parts(result)
    return reference, _recompose(result, alpha, rotate_hue(fg, degrees, mask.to(fg.dtype)))


def thin_part(piece: np.ndarray, radius: int = 3) -> np.ndarray:
    """Parts of a bool mask an opening of ``radius`` erases (wire, prongs, hooks)."""
    m = piece.astype(np.uint8)
    return (m > 0) & (cv2.morphologyEx(m, cv2.MORPH_OPEN, regions.disk(radius)) == 0)


def chop(reference: Frame, result: Frame, rng: np.random.Generator, radius: int = 12,
         where: np.ndarray | None = None) -> Pair | None:
    """Cut the matte across a thin structure: alpha 0 in a disc on a thin part, the thin part only.

    ``where``: optional bool ``(H, W)`` of allowed centres (e.g. the simulator's chain wire);
    None: any pixel of the cut-out's thin part. Returns None when there is nothing thin.
    """
    alpha, fg, _ = _parts(result)
    piece = alpha[0, 0].cpu().numpy() > 0.5
    thin = thin_part(piece)
    # centres well inside a thin run, not on its last pixel
    thin_core = cv2.erode(thin.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
    centres = thin_core if where is None else thin_core & where
    ys, xs = np.nonzero(centres)
    if len(ys) < 10:
        return None
    k = int(rng.integers(len(ys)))
    cut = np.zeros_like(piece, np.uint8)
    cv2.circle(cut, (int(xs[k]), int(ys[k])), radius, 1, -1)
    grown = cv2.dilate(thin.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    cut = torch.from_numpy((cut > 0) & grown).to(alpha.device)[None, None]
    return reference, _recompose(result, torch.where(cut, torch.zeros_like(alpha), alpha), fg)


def cast(reference: Frame, result: Frame, gains: tuple[float, float, float]) -> Pair:
    """A cast neutralize left in: per-channel ``gains`` (luminance kept) on the neutralized frame and the output."""
    g = torch.tensor(gains, dtype=reference.image.dtype)
    g = (g / (g @ torch.tensor(LUMINANCE, dtype=g.dtype))).to(reference.image.device).view(1, 3, 1, 1)
    alpha, fg, _ = _parts(result)
    return reference.replace(image=(reference.image * g).clamp(0, 1)), _recompose(result, alpha, (fg * g).clamp(0, 1))


def halo(reference: Frame, result: Frame, width: int = 4, strength: float = 0.45) -> Pair:
    """Alpha bleeding: the old backdrop (the neutralized input) fades in over ``width`` px outside the piece.

    The fringe's alpha stays below 0.5, so the cut-out's outline (alpha > 0.5) does not move.
    """
    alpha, fg, _ = _parts(result)
    piece = (alpha[0, 0].cpu().numpy() > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(1 - piece, cv2.DIST_L2, 3)
    ramp = np.clip(1 - (dist - 1) / width, 0, 1) * (dist > 0)
    bleed = torch.from_numpy(strength * ramp.astype(np.float32)).to(alpha)[None, None]
    new_alpha = torch.maximum(alpha, bleed)
    added = new_alpha - alpha
    new_fg = torch.where(added > 0, (alpha * fg + added * reference.image) / new_alpha.clamp(min=1e-6), fg)
    return reference, _recompose(result, new_alpha, new_fg)


def inject(name: str, reference: Frame, result: Frame, rng: np.random.Generator,
           where: np.ndarray | None = None) -> Pair | None:
    """Apply fault ``name`` (a key of ``FAULTS``) with its calibration magnitude; None when not applicable."""
    if name == "oversmooth":
        return oversmooth(reference, result)
    if name == "hue_metal":
        return hue_shift(reference, result, 6.0 * rng.choice((-1, 1)), "metal")
    if name == "hue_stone":
        return hue_shift(reference, result, 8.0 * rng.choice((-1, 1)), "stones")
    if name == "chop":
        return chop(reference, result, rng, where=where)
    if name == "cast":
        return cast(reference, result, CASTS[list(CASTS)[int(rng.integers(len(CASTS)))]])
    if name == "halo":
        return halo(reference, result)
    raise ValueError(f"unknown fault {name!r}; faults are {', '.join(FAULTS)}")
