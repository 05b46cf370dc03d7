"""Per-image QA metrics: did the retouch drift colour, lose detail, or cut badly?

Every metric compares the retouched piece with the neutralized input (the
colour-corrected original), on the piece's interior. Column names are
stable: they appear in ``OUT/qa/<shoot>/metrics.csv``, in ``manifest.csv``
and in the preset's QA rules. ``METRIC_DOCS`` says what each one means.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from tasks.color import delta_e2000, linear_to_srgb, rgb_to_lab
from tasks.frame import Frame, luminance
from tasks.pipeline import FLAG_CODES
from tasks.ops import erode, gaussian_blur

METRIC_DOCS = {
    "delta_e_mean": "mean CIEDE2000 between output and neutralized input over the piece interior",
    "delta_e_p95": "95th percentile of the same (catches local colour damage)",
    "detail_retention": "band-pass (DoG, sigma 1-2 px) energy of the output over the input, piece interior; 1 = all fine detail kept",
    "edge_recall": "share of the input's strong edges inside the piece still at least half as strong in the output",
    "mask_coverage": "mean alpha: share of the frame that is piece",
    "mask_components": "connected pieces in the mask (a pair of earrings is 2)",
    "mask_touches_frame": "share of the frame border covered by the piece (0 = piece fully inside)",
    "dust_area": "share of piece pixels the dust stage filled",
    "sensor_dust_spots": "sensor-dust spots found across the shoot and divided out of this image (set by the flow)",
    "clipped_before": "share of piece pixels with a clipped channel in the input",
    "clipped_after": "the same in the output",
    "clipped_increase": "clipped_after - clipped_before",
    "stage_flags": "count of stage warnings",
    **{f"flag_{c}": f"1 when a stage raised '{c}' (see the image's notes for why)" for c in FLAG_CODES},
}


def _interior(alpha: torch.Tensor) -> torch.Tensor:
    return erode((alpha > 0.99).to(alpha.dtype), 2) > 0.5


def _band_energy(y: torch.Tensor, mask: torch.Tensor) -> float:
    dog = gaussian_blur(y, 1.0) - gaussian_blur(y, 2.0)
    return float((dog[mask] ** 2).sum())


def _gradient(y: torch.Tensor) -> torch.Tensor:
    gx = torch.zeros_like(y)
    gy = torch.zeros_like(y)
    gx[..., :, 1:-1] = (y[..., :, 2:] - y[..., :, :-2]) / 2
    gy[..., 1:-1, :] = (y[..., 2:, :] - y[..., :-2, :]) / 2
    return torch.hypot(gx, gy)


def compute_metrics(reference: Frame, result: Frame) -> dict[str, float]:
    """Metrics for one image (B=1). ``reference`` is the frame after neutralize."""
    alpha = result.alpha if result.alpha is not None else torch.zeros_like(result.image[:, :1])
    piece = alpha > 0.5
    inner = _interior(alpha)
    before = reference.image
    after = result.foreground if result.foreground is not None else result.image
    # Outside the interior the edge band was decontaminated and the backdrop
    # replaced on purpose; keep those pixels equal so filters do not leak them in.
    after = torch.where(inner, after, before)
    m: dict[str, float] = {}
    if inner.any():
        de = delta_e2000(rgb_to_lab(before), rgb_to_lab(after))[inner]
        m["delta_e_mean"] = float(de.mean())
        m["delta_e_p95"] = float(torch.quantile(de[:: max(1, de.numel() // 1_000_000)], 0.95))
        y0, y1 = linear_to_srgb(luminance(before)), linear_to_srgb(luminance(after))
        e0 = _band_energy(y0, inner)
        m["detail_retention"] = _band_energy(y1, inner) / e0 if e0 > 0 else 1.0
        g0, g1 = _gradient(y0), _gradient(y1)
        strong = inner & (g0 > max(0.05, float(torch.quantile(g0[inner][:: max(1, int(inner.sum()) // 1_000_000)], 0.9))))
        m["edge_recall"] = float((g1[strong] >= 0.5 * g0[strong]).float().mean()) if strong.any() else 1.0
    else:
        m.update(delta_e_mean=float("nan"), delta_e_p95=float("nan"), detail_retention=float("nan"), edge_recall=float("nan"))
    m["mask_coverage"] = float(alpha.mean())
    mask_np = piece[0, 0].to(torch.uint8).cpu().numpy()
    m["mask_components"] = float(cv2.connectedComponents(mask_np, connectivity=8)[0] - 1)
    border = torch.cat([piece[0, 0, 0], piece[0, 0, -1], piece[0, 0, :, 0], piece[0, 0, :, -1]])
    m["mask_touches_frame"] = float(border.float().mean())
    defects = result.masks.get("defects")
    m["dust_area"] = float((defects > 0.5)[piece].float().mean()) if defects is not None and piece.any() else 0.0
    if piece.any():
        m["clipped_before"] = float((before.amax(1, keepdim=True) >= 0.999)[piece].float().mean())
        m["clipped_after"] = float((after.amax(1, keepdim=True) >= 0.999)[piece].float().mean())
    else:
        m["clipped_before"] = m["clipped_after"] = 0.0
    m["clipped_increase"] = m["clipped_after"] - m["clipped_before"]
    m["stage_flags"] = float(len(result.flags))
    for code in FLAG_CODES:
        m[f"flag_{code}"] = float(code in result.flags)
    return m


def detail_loss_map(reference: Frame, result: Frame) -> np.ndarray:
    """Per-pixel lost band-pass energy (H, W) in [0, 1], for the review overlay."""
    after = result.foreground if result.foreground is not None else result.image
    piece = (result.alpha > 0.5) if result.alpha is not None else torch.ones_like(after[:, :1], dtype=torch.bool)
    after = torch.where(piece, after, reference.image)
    y0 = linear_to_srgb(luminance(reference.image))
    y1 = linear_to_srgb(luminance(after))
    d0 = (gaussian_blur(y0, 1.0) - gaussian_blur(y0, 2.0)).abs()
    d1 = (gaussian_blur(y1, 1.0) - gaussian_blur(y1, 2.0)).abs()
    loss = gaussian_blur((d0 - d1).clamp(min=0), 2.0)
    return (loss / 0.02).clamp(0, 1)[0, 0].cpu().numpy()
