"""The unit every stage consumes and returns: an image plus its layers.

Tensors follow one convention throughout Loupe: float32 ``(B, C, H, W)``,
linear RGB (sRGB primaries) in ``[0, 1]``; masks are ``(B, 1, H, W)`` in
``[0, 1]``. Device and dtype always come from ``Frame.image``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from tasks.color import LUMINANCE
from tasks.ops import only_0s_and_1s, shrunk_by


@dataclass(frozen=True)
class Frame:
    """An image in flight through the pixel pipe.

    image:  (B, 3, H, W) linear RGB, the current rendering.
    alpha:  (B, 1, H, W) piece matte, set by ``cutout``; None before it.
    foreground: (B, 3, H, W) the piece's colours before compositing, set by
            ``background`` so the transparent export can be written.
    masks:  named (B, 1, H, W) masks in [0, 1] stages hand to later stages, QA and review
            (``piece``, ``defects``, ``metal``, ``stones``, ...). One of only 0s and 1s is kept
            as bool, a byte a pixel (a 24 MP mask is 24 MB, not a 96 MB float plane); a soft
            one (``generated``'s feathered edge) as given. ``layer`` reads one as a float plane.
    flags:  stable reason codes a stage raised instead of failing
            (e.g. ``cutout_uncertain``); QA turns them into review flags.
    notes:  human-readable lines explaining what each stage did.
    plate:  (B, 3, H, W) the shoot's clean plate (the empty backdrop, same camera and light)
            when the studio gave one; a stage that changes colour changes it alike.
    """

    image: torch.Tensor
    alpha: torch.Tensor | None = None
    foreground: torch.Tensor | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    plate: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_shape(self.image, "image", channels=3)
        if any(m.dtype != torch.bool for m in self.masks.values()):
            object.__setattr__(self, "masks", {k: _compact(m) for k, m in self.masks.items()})
        if self.alpha is not None:
            check_shape(self.alpha, "alpha", channels=1, like=self.image)
        if self.plate is not None:
            check_shape(self.plate, "plate", channels=3, like=self.image)

    def replace(self, **changes) -> "Frame":
        return dataclasses.replace(self, **changes)

    def layer(self, name: str) -> torch.Tensor | None:
        """``masks[name]`` as a plane of the image's dtype, to compute with (None without it)."""
        mask = self.masks.get(name)
        return None if mask is None else mask.to(self.image.dtype)

    def with_masks(self, **masks: torch.Tensor) -> "Frame":
        return self.replace(masks={**self.masks, **masks})

    def flagged(self, code: str, note: str) -> "Frame":
        return self.replace(flags=self.flags + (code,), notes=self.notes + (note,))

    def noted(self, note: str) -> "Frame":
        return self.replace(notes=self.notes + (note,))

    def cropped(self, box: tuple[slice, slice]) -> "Frame":
        """Every image-sized tensor cut to ``box`` (rows, columns)."""
        def cut(t):
            return None if t is None else t[..., box[0], box[1]]

        return self.replace(image=cut(self.image), alpha=cut(self.alpha), foreground=cut(self.foreground),
                            plate=cut(self.plate), masks={k: cut(v) for k, v in self.masks.items()})

    def shrunk_by(self, k: int) -> "Frame":
        """Every image-sized tensor at the pyramid level ``k`` (``tasks.ops.shrunk_by``: each k x k block's
        mean; a mask's share of piece, so a soft one); ``k`` 1: this frame."""
        if k == 1:
            return self

        def level(t):
            return None if t is None else shrunk_by(t, k)

        return self.replace(image=level(self.image), alpha=level(self.alpha), foreground=level(self.foreground),
                            plate=level(self.plate), masks={n: level(m) for n, m in self.masks.items()})


def _compact(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as bool when it holds only 0s and 1s (no value is lost), else as it is.

    A soft mask (a pyramid level's share of piece, a matte) is told by a strided sample first: every
    ``replace`` of a frame checks its masks again, and the whole test is five passes over the plane
    (~80 ms at 24 MP)."""
    if mask.dtype == torch.bool or not only_0s_and_1s(mask[..., ::SOFT_STEP, ::SOFT_STEP]):
        return mask
    if not only_0s_and_1s(mask):
        return mask
    return mask > 0.5


# a mask's every SOFT_STEP-th row and column (a view, no copy) is looked at before the whole of it
SOFT_STEP = 7


def check_shape(t: torch.Tensor, name: str, *, channels: int, like: torch.Tensor | None = None) -> None:
    """Raise a ValueError naming the expected and actual shape."""
    ok = t.ndim == 4 and t.shape[1] == channels
    if ok and like is not None:
        ok = t.shape[0] == like.shape[0] and t.shape[2:] == like.shape[2:]
    if not ok:
        want = f"(B, {channels}, H, W)" + (f" matching {tuple(like.shape)}" if like is not None else "")
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y of linear sRGB, ``(B, 3, H, W) -> (B, 1, H, W)``."""
    w = rgb.new_tensor(LUMINANCE).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)
