"""Compose export variants from a finished frame (pure tensor code).

Source-grid variants keep every pixel where it was; canvas variants crop to
the piece, scale it to fit the canvas minus a margin and centre it on a
square of the backdrop colour. Resampling happens in linear light with an
antialiasing filter, so fine chains do not alias or darken when shrunk.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tasks.color import linear_to_srgb


def _extent(plane: torch.Tensor, threshold: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), exclusive ends, of ``plane`` (H, W) > threshold; None if empty. The
    rows' maxima first, then the columns' on those rows only: no bool copy of the frame, and no
    reduction across rows of all of it (a 24 MP alpha 67 -> 12 ms, called a dozen times an image)."""
    rows = torch.nonzero(plane.amax(1) > threshold).flatten()
    if rows.numel() == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = torch.nonzero(plane[top:bottom].amax(0) > threshold).flatten()
    return top, bottom, int(cols[0]), int(cols[-1]) + 1


def piece_box(alpha: torch.Tensor, threshold: float = 0.02) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends, of alpha > threshold; the whole frame if empty."""
    return _extent(alpha[0, 0], threshold) or (0, alpha.shape[-2], 0, alpha.shape[-1])


def grown_box(mask: torch.Tensor, margin: int, threshold: float = 0.5) -> tuple[slice, slice] | None:
    """(rows, columns) of ``mask`` > threshold grown by ``margin`` px, clipped to the frame; None if empty."""
    box = _extent(mask[0, 0], threshold)
    if box is None:
        return None
    top, bottom, left, right = box
    return grow((slice(top, bottom), slice(left, right)), margin, mask.shape[-2:])


def grow(box: tuple[slice, slice], margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` (rows, columns) grown by ``margin`` px, clipped to a frame of ``shape`` (H, W)."""
    rows, cols = box
    return (slice(max(rows.start - margin, 0), min(rows.stop + margin, shape[0])),
            slice(max(cols.start - margin, 0), min(cols.stop + margin, shape[1])))


def canvas_scale(box: tuple[int, int, int, int], size: int, margin: float) -> float:
    """How much ``on_canvas`` enlarges the piece (its ``piece_box``): its long side on the canvas over its
    long side in the source."""
    top, bottom, left, right = box
    return max(1, round(size * (1 - 2 * margin))) / max(bottom - top, right - left)


def on_canvas(image: torch.Tensor, alpha: torch.Tensor, size: int, margin: float,
              backdrop: torch.Tensor, box: tuple[int, int, int, int] | None = None, *,
              transparent: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Centre the piece on a ``size`` x ``size`` canvas.

    Args:
        image: (1, 3, H, W) linear RGB of the piece (foreground colours).
        alpha: (1, 1, H, W) matte.
        backdrop: linear RGB of the canvas, (3,) or (1, 3, 1, 1).
        box: ``piece_box(alpha)`` when the caller has it (a pass over the whole matte, 10-25 ms at 24 MP).
        transparent: give the piece's unpremultiplied colour (0 where none of it lies) and the
            canvas's alpha, for a canvas with alpha, instead of the composite over ``backdrop``.
    Returns: the canvas's colour (1, 3, size, size) and, with ``transparent``, its alpha (1, 1, size,
        size), else None.
    """
    box = piece_box(alpha) if box is None else box
    top, bottom, left, right = box
    crop, crop_a = image[..., top:bottom, left:right], alpha[..., top:bottom, left:right]
    h, w = crop.shape[-2:]
    scale = canvas_scale(box, size, margin)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))

    def shrunk(plane: torch.Tensor) -> torch.Tensor:
        return F.interpolate(plane, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    # only the piece's scaled box is computed: around it the canvas is the backdrop, or nothing (a
    # 3000 px canvas is 27 M floats a pass; the box fills it along its longer side only)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    placed = (..., slice(y0, y0 + nh), slice(x0, x0 + nw))
    a = shrunk(crop_a)
    canvas_a = None
    if transparent:
        canvas_a = torch.zeros((1, 1, size, size), dtype=image.dtype, device=image.device)
        canvas_a[placed] = a
    back = backdrop.reshape(3).to(image)
    canvas = (torch.zeros((1, 3, size, size), dtype=image.dtype, device=image.device) if transparent
              else back.view(1, 3, 1, 1).expand(1, 3, size, size).clone())
    # Resample premultiplied colour so the backdrop never bleeds into edges; a channel at a time, so
    # the full-size temporary is one plane (96 MB at 24 MP), not four
    for c in range(3):
        premult = shrunk(crop[:, c:c + 1] * crop_a)
        canvas[:, c:c + 1][placed] = (premult.div_(a.clamp(min=1e-6)) if transparent
                                      else premult.add_((1 - a) * back[c]).clamp_(0, 1))
    return canvas, canvas_a


def quantize(image: torch.Tensor, alpha: torch.Tensor | None, bits: int) -> np.ndarray:
    """Linear (1, 3, H, W) (+ alpha) -> sRGB-encoded uint8/uint16 (H, W, 3|4).

    With alpha, a fully transparent pixel carries no colour (0, 0, 0, 0), not the backdrop's
    invisible grain and noise: a 24 MP cut-out PNG 41 -> 4 MB and 1.8 -> 0.4 s to write.
    On a CPU in bands of rows, written straight into the result: a 24 MP RGBA export no longer
    makes six float copies of the frame (1.1 GB) on the way. Along each band only the columns
    where the image varies go through the curve (the piece, on a backdrop replaced by one colour, or
    cut out): the rest takes the one code of its first pixel, or nothing's (0, 0, 0, 0)."""
    top = 255 if bits == 8 else 65535
    h, w = image.shape[-2:]
    out = np.empty((h, w, 3 + (alpha is not None)), np.uint8 if bits == 8 else np.uint16)
    rows = h if image.device.type != "cpu" else max(1, (1 << 20) // (w * out.shape[2]))
    for r in range(0, h, rows):
        band = image[..., r:r + rows, :]
        opacity = alpha[..., r:r + rows, :] if alpha is not None else None
        left, right = _varying(band, opacity)
        if left > 0 or right < w:
            out[r:r + rows] = 0 if opacity is not None else _codes(band[..., :1, :1], None, top)
        if right > left:
            out[r:r + rows, left:right] = _codes(band[..., left:right], None if opacity is None else opacity[..., left:right], top)
    return out


def _varying(band: torch.Tensor, opacity: torch.Tensor | None) -> tuple[int, int]:
    """The columns (left, right), exclusive end, of a band of rows outside which every pixel is fully
    transparent (with ``opacity``) or the band's first pixel's colour; (0, 0) if none is left."""
    if opacity is not None:
        varies = (opacity[0, 0] > 0).any(0)
    else:
        varies = (band[0] != band[0, :, :1, :1]).any(0).any(0)
    cols = torch.nonzero(varies).flatten()
    return (0, 0) if cols.numel() == 0 else (int(cols[0]), int(cols[-1]) + 1)


def _codes(image: torch.Tensor, alpha: torch.Tensor | None, top: int) -> np.ndarray:
    """sRGB codes (H, W, 3|4) of linear (1, 3, H, W) (+ alpha), cast straight to the export's type
    (the codes are whole and in range; the cast on the host: uint16 is a CPU dtype)."""
    planes = linear_to_srgb(image)
    if alpha is not None:
        planes = torch.cat([planes, alpha.clamp(0, 1)], 1)
    codes = (planes[0] * top + 0.5).floor_().clamp_(0, top)
    if alpha is not None:
        codes[:3] *= codes[3:] > 0
    return codes.permute(1, 2, 0).cpu().to(torch.uint8 if top == 255 else torch.uint16).numpy()
