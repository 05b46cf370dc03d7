"""Small device-agnostic tensor operations the stages share.

Everything here takes ``(B, C, H, W)`` float tensors and keeps their device
and dtype, in the manner of kornia's filters. On a CPU, float32 filters run
through OpenCV (same results, a fraction of the time); elsewhere through torch.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


# frames above this many pixels read frame-wide statistics (noise medians, a backdrop's mean colour)
# from an even sample of this order of pixels; at or below it, from every pixel
SAMPLE_ABOVE = 4_000_000


def _opencv_can(x: torch.Tensor) -> bool:
    """OpenCV's filters give the same result 8-100x faster than depthwise convolutions and
    pooling on a CPU (issue 13's profile): used for float32 CPU tensors outside autograd."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and x.ndim == 4


def _per_plane(x: torch.Tensor, apply, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``apply(src, dst)`` on every (H, W) plane of a CPU tensor, into a new tensor (of planes ``size``
    when the map changes it)."""
    src = x.contiguous().numpy()
    out = np.empty((*src.shape[:2], *(size or src.shape[2:])), src.dtype)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            apply(src[b, c], out[b, c])
    return torch.from_numpy(out)


# per-pixel maps on a CPU run on bands of rows of about this many values (``by_rows``)
ROW_BAND_VALUES = 1 << 18


def by_rows(f, *xs: torch.Tensor) -> torch.Tensor:
    """``f(*xs)`` for a per-pixel ``f`` of (B, C, H, W) tensors, on bands of rows of a large CPU tensor
    of about ``ROW_BAND_VALUES`` values (the same values): its temporaries (CIEDE2000 makes ~40) stay
    the size of a band."""
    x = xs[0]
    if x.device.type != "cpu" or x.ndim != 4 or x.numel() <= 4 * ROW_BAND_VALUES or any(t.requires_grad for t in xs):
        return f(*xs)
    h = x.shape[-2]
    out = None
    for rows, _, _ in row_bands(h, max(1, ROW_BAND_VALUES // (x.shape[0] * x.shape[1] * x.shape[-1])), 0):
        part = f(*(t[..., rows, :] for t in xs))
        if out is None:
            out = part.new_empty((*part.shape[:-2], h, part.shape[-1]))
        out[..., rows, :] = part
    return out


def row_bands(h: int, rows: int, halo: int):
    """Bands of ``rows`` rows over ``h`` rows, each read with ``halo`` rows of context on both sides:
    yields (own, read, keep): the band's own rows, the rows to compute on, and its own rows within
    those. A map whose filters reach at most ``halo`` px gives on each band's own rows what it gives
    on the whole frame, with temporaries the size of a band."""
    for top in range(0, h, rows):
        own = slice(top, min(top + rows, h))
        read = slice(max(0, top - halo), min(h, own.stop + halo))
        yield own, read, slice(own.start - read.start, own.stop - read.start)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if _opencv_can(x):
        size = (2 * radius + 1,) * 2
        return _per_plane(x, lambda s, d: cv2.GaussianBlur(s, size, sigma, dst=d, sigmaY=sigma,
                                                           borderType=cv2.BORDER_REFLECT_101))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def masked_blur(x: torch.Tensor, weight: torch.Tensor, sigma: float,
                floor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised convolution: the Gaussian mean of ``x`` over ``weight`` alone (a mask or weights),
    as if nothing else were there, and the blurred weight (how much of it the window read). Where the
    window reads under ``floor`` of weight, the mean fades to 0."""
    read = gaussian_blur(weight, sigma)
    return gaussian_blur(x * weight, sigma) / read.clamp(min=floor), read


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, replicate padding."""
    k = 2 * radius + 1
    if _opencv_can(x):
        return _per_plane(x, lambda s, d: cv2.blur(s, (k, k), dst=d, borderType=cv2.BORDER_REPLICATE))
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over a (2r+1)^2 square; outside the frame does not count."""
    if radius <= 0:
        return mask
    if _opencv_can(mask):
        square = np.ones((2 * radius + 1,) * 2, np.uint8)
        return _per_plane(mask, lambda s, d: cv2.dilate(s, square, dst=d))
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Minimum over a (2r+1)^2 square; outside the frame does not count."""
    if radius <= 0:
        return mask
    if _opencv_can(mask):
        square = np.ones((2 * radius + 1,) * 2, np.uint8)
        return _per_plane(mask, lambda s, d: cv2.erode(s, square, dst=d))
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)


def opening(x: torch.Tensor, radius: int) -> torch.Tensor:
    return dilate(erode(x, radius), radius)


def closing(x: torch.Tensor, radius: int) -> torch.Tensor:
    return erode(dilate(x, radius), radius)


def shrunk_size(size: tuple[int, int], long_edge: int, smallest: int = 1) -> tuple[int, int]:
    """(H, W) of a frame of ``size`` brought to a long edge of at most ``long_edge`` px (never grown),
    each side at least ``smallest``."""
    h, w = size
    shrink = min(1.0, long_edge / max(h, w))
    return max(smallest, round(h * shrink)), max(smallest, round(w * shrink))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize to ``(H, W)``; area filter when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] < x.shape[-2] and size[1] < x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    if _opencv_can(x):   # the same pixel centres as torch's (align_corners=False), within 2e-5; 5x faster
        return _per_plane(x, lambda s, d: cv2.resize(s, (size[1], size[0]), dst=d, interpolation=cv2.INTER_LINEAR),
                          tuple(size))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def halve(x: torch.Tensor) -> torch.Tensor:
    """Mean of each 2 x 2 block; an odd last row or column is averaged on its own (ceil mode)."""
    if not _opencv_can(x):
        return F.avg_pool2d(x, 2, ceil_mode=True)
    h, w = x.shape[-2:]
    h2, w2 = h // 2, w // 2

    def half(s, d):   # 4x faster than torch's pooling
        if h2 and w2:
            cv2.resize(s[:2 * h2, :2 * w2], (w2, h2), dst=d[:h2, :w2], interpolation=cv2.INTER_AREA)
        if h % 2:
            d[h2, :w2] = (s[-1, 0:2 * w2:2] + s[-1, 1:2 * w2:2]) / 2
        if w % 2:
            d[:h2, w2] = (s[0:2 * h2:2, -1] + s[1:2 * h2:2, -1]) / 2
        if h % 2 and w % 2:
            d[h2, w2] = s[-1, -1]
    return _per_plane(x, half, ((h + 1) // 2, (w + 1) // 2))


def shrunk_by(x: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of each ``k`` x ``k`` block of ``x`` (a bool mask as its share of True), the last row and
    column of blocks averaging what they hold: a pyramid level, so a box of the frame whose corners
    are multiples of ``k`` shrinks to the same pixels as the frame does. ``k`` 1: ``x`` itself."""
    if k == 1:
        return x
    x = x if x.is_floating_point() else x.float()
    return halve(x) if k == 2 else F.avg_pool2d(x, k, ceil_mode=True)


def resize_at(x: torch.Tensor, size: tuple[int, int], rows: slice, cols: slice) -> torch.Tensor:
    """``resize(x, size)[..., rows, cols]`` without making the whole resized image: a coarse map
    (a backdrop model, a network's probability) read at full size on the piece's box only."""
    h, w = size
    if x.shape[-2] > h or x.shape[-1] > w:
        return resize(x, size)[..., rows, cols]      # shrinking: an area filter, tiny frames only
    # bilinear, align_corners=False: output pixel i reads input (i + 0.5) * in / out - 0.5, i.e. the
    # normalised coordinate (2 i + 1) / out - 1; 'border' padding clamps the edges as interpolate does
    ys = (2 * torch.arange(rows.start or 0, rows.stop if rows.stop is not None else h, device=x.device,
                           dtype=x.dtype) + 1) / h - 1
    xs = (2 * torch.arange(cols.start or 0, cols.stop if cols.stop is not None else w, device=x.device,
                           dtype=x.dtype) + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None].expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def only_0s_and_1s(values: torch.Tensor) -> bool:
    """True when every value of ``values`` is 0 or 1 (a mask that loses nothing as bool)."""
    return bool(((values == 0) | (values == 1)).all())


def fill_holes(image: torch.Tensor, hole: torch.Tensor, levels: int = 12,
               box: tuple[slice, slice] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fill masked pixels (``hole``: bool, or a weight in [0, 1]) from their surroundings (push-pull interpolation).

    A pyramid of normalised convolutions (Gortler et al. 1996, "The
    Lumigraph", doi:10.1145/237170.237200): known pixels are averaged down
    the pyramid, holes are filled from the coarsest level that has support,
    and the result is blended back up. Smooth, seam-free, and the same code
    on CPU and CUDA. Pixels outside ``hole`` are returned unchanged.

    ``box`` (rows, columns): only that part of the result is made (the coarser levels still read
    the whole frame: the fill is not local). The full-size level is made plane by plane (on the
    box): its temporaries are a plane's. ``out`` (the size of ``image``): the result is written into
    its ``box`` and ``out`` returned, the rest of it left as it is (no box-sized copy is made).
    """
    if hole.dtype == torch.bool:    # (the callers' holes are: no test of every value for 0s and 1s)
        known, take = (~hole).to(image.dtype), hole
    else:
        known = 1.0 - hole.clamp(0, 1)
        # a hole of only 0s and 1s: the full-size level takes the grown fill where it is, once per frame
        take = hole > 0.5 if only_0s_and_1s(hole) else None
    coarse = _coarse_fill(image, known, levels)
    rows, cols = box if box is not None else (slice(None), slice(None))
    if out is None:
        out = target = torch.empty_like(image[..., rows, cols])
    else:
        target = out[..., rows, cols]      # a view: the planes are written into ``out`` itself
    for c in range(image.shape[1]):
        plane = slice(c, c + 1)
        target[:, plane] = _finest(None if coarse is None else coarse[:, plane], image[:, plane], known, take, box)
    return out


def _coarse_fill(image: torch.Tensor, known: torch.Tensor, levels: int) -> torch.Tensor | None:
    """The push-pull fill at half size (the pyramid's level 1, filled from every coarser one); None
    when the image is too small to halve."""
    if min(image.shape[-2:]) < 2 or levels < 1:
        return None
    # the first level plane by plane, so image * known is never made whole
    pyramid = [(torch.cat([halve(image[:, c:c + 1] * known) for c in range(image.shape[1])], 1), halve(known))]
    for _ in range(levels - 1):
        v, w = pyramid[-1]
        if min(v.shape[-2:]) < 2:
            break
        pyramid.append((halve(v), halve(w)))
    v, w = pyramid[-1]
    filled = v / w.clamp(min=1e-6)
    for v, w in reversed(pyramid[:-1]):
        # in bands of rows: at 24 MP the half-size level's blend made ~0.35 GB of temporaries
        filled = by_rows(_blend_level, v, w, resize(filled, tuple(v.shape[-2:])))
    return filled


def _blend_level(v: torch.Tensor, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """A pyramid level's own average where it has known support, the coarser fill grown elsewhere."""
    wn = w.clamp(max=1e-3) * 1e3  # 1 where there is any known support at this level
    return wn * v / w.clamp(min=1e-6) + (1 - wn) * up


def _finest(coarse: torch.Tensor | None, image: torch.Tensor, known: torch.Tensor, take: torch.Tensor | None,
            box: tuple[slice, slice] | None = None) -> torch.Tensor:
    """The fill's full-size level (on ``box``): known pixels as they are, holes from ``coarse`` grown;
    ``take``: the holes as a bool mask when they are all-or-nothing."""
    size = image.shape[-2:]
    if box is not None:
        image, known = image[..., box[0], box[1]], known[..., box[0], box[1]]
        take = None if take is None else take[..., box[0], box[1]]
    if coarse is None:          # a frame too small to halve: holes are left black
        return image * known + image * known / known.clamp(min=1e-6) * (1 - known)
    up = resize(coarse, tuple(size)) if box is None else resize_at(coarse, tuple(size), *box)
    if take is not None:   # the same values, without the blend's temporaries
        return torch.where(take, up, image)
    v = image * known
    wn = known.clamp(max=1e-3) * 1e3
    filled = wn * v / known.clamp(min=1e-6) + (1 - wn) * up
    return image * known + filled * (1 - known)


def channel_quantile(vals: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile of each row of ``vals`` (C, N) -> (C,); NaN when N is 0."""
    if vals.shape[1] == 0:
        return torch.full((vals.shape[0],), float("nan"), device=vals.device, dtype=vals.dtype)
    if vals.shape[1] > 2_000_000:  # torch.quantile refuses huge inputs; subsample evenly
        vals = vals[:, :: vals.shape[1] // 2_000_000 + 1]
    return quantiles(vals, (q,))[0]


def quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """``torch.quantile(values, qs, dim=-1)`` (linear interpolation; (len(qs), ...)), the same values. On
    a CPU the order statistics it needs come from a partial sort (``np.partition``): 5x faster than
    torch's full sort on a million values, a few tenths of a second an image (issue 13)."""
    q = torch.tensor(qs, dtype=values.dtype, device=values.device)
    if values.device.type != "cpu" or values.requires_grad or bool(values.isnan().any()):
        return torch.quantile(values, q, dim=-1)
    # torch's own steps: ranks in the values' dtype, the neighbours below and above, and a lerp
    ranks = q * (values.shape[-1] - 1)
    below, above = ranks.long(), ranks.ceil().long()
    kth = np.unique(torch.cat([below, above]).numpy())
    ordered = torch.from_numpy(np.partition(values.detach().contiguous().numpy(), kth, axis=-1))
    return ordered[..., below].movedim(-1, 0).lerp_(ordered[..., above].movedim(-1, 0), (ranks - below).view(-1, *[1] * (values.ndim - 1)))
