"""Generative fill: the diffusers adapter (local checkpoints only, nothing is downloaded).

Two jobs, both behind plain torch functions so stages never see diffusers:

* ``inpaint``: regenerate large defects and unwanted reflections. The image is
  cut into tiles of the model's native size (``unet.sample_size *
  vae_scale_factor``, 512 px for Stable Diffusion 1.5 inpainting) that overlap
  by ``overlap`` px; only tiles containing masked pixels are run; tile results
  are cross-faded with raised-cosine ramps over the overlaps, and the blend is
  composited into the input with a weight that is 0 outside the mask and ramps
  to 1 over ``feather`` px *inside* it, so every pixel outside the mask keeps
  its exact input value.
* ``restyle_background``: img2img from a reference photo to a styled-scene
  backdrop at the model's resolution, resized to the image. The piece is then
  composited over it by alpha (``tasks.fill.compose_scene``), so the piece's
  own pixels are never generated.

Colour: Loupe's tensors are linear RGB; diffusion models are trained on sRGB,
so both functions convert linear -> sRGB on the way in and back on the way out.

    pipe = load_inpainter("/models/sd-inpainting", "cuda")          # cached
    out = inpaint(pipe, image, mask, prompt="polished gold", seed=0)  # (1,3,H,W) linear

Determinism: every tile's noise comes from a ``torch.Generator`` on the
pipeline's device seeded from ``seed`` and the tile's position, so the same
seed on the same device gives the same pixels, whichever other tiles ran.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from tasks.color import linear_to_srgb, srgb_to_linear
from tasks.frame import check_shape
from tasks.ops import dilate, erode

__all__ = ["load_inpainter", "load_img2img", "native_tile", "tile_starts", "tile_window", "blend_weight",
           "inpaint", "restyle_background", "CHECKPOINT_HINT"]

CHECKPOINT_HINT = ("set [stages.fill] checkpoint to a local folder written by diffusers' save_pretrained "
                   "(it holds model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")


def _model_index(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"diffusers checkpoint folder not found: {path}; {CHECKPOINT_HINT}")
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json); {CHECKPOINT_HINT}")
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{index} is not valid JSON ({e}); {CHECKPOINT_HINT}") from e


@functools.lru_cache(maxsize=4)
def _load(kind: str, path: str, device: str, dtype: torch.dtype):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    index = _model_index(path)
    extra = {}
    if "safety_checker" in index:
        # Product photos of jewellery trip NSFW classifiers into black tiles; retouching needs none.
        extra = {"safety_checker": None, "requires_safety_checker": False}
    auto = AutoPipelineForInpainting if kind == "inpaint" else AutoPipelineForImage2Image
    try:
        pipe = auto.from_pretrained(path, local_files_only=True, dtype=dtype, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"could not load the diffusers pipeline in {path} ({type(e).__name__}: {e}); "
                         f"{CHECKPOINT_HINT}") from e
    if kind == "img2img":
        unet = getattr(pipe, "unet", None)
        latent = getattr(getattr(pipe, "vae", None), "config", None)
        if unet is not None and latent is not None and unet.config.in_channels != latent.latent_channels:
            raise ValueError(f"{path} holds an inpainting-only UNet ({unet.config.in_channels} input channels); "
                             "the styled scene needs a text-to-image/img2img checkpoint "
                             "([stages.fill] scene_checkpoint)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(device))


def load_inpainter(checkpoint_dir: str | Path, device="cpu", dtype: torch.dtype | None = None):
    """Load (cached per path, device and dtype) a diffusers inpainting pipeline from a local folder.

    ``checkpoint_dir`` is a folder written by ``save_pretrained`` (``model_index.json`` plus
    component folders); ``local_files_only=True``, so nothing is ever downloaded. Any pipeline
    ``AutoPipelineForInpainting`` maps (SD 1.x/2.x inpainting, SDXL inpainting, a plain
    text-to-image SD checkpoint used in legacy inpaint mode) works. ``dtype``: default float32;
    pass ``torch.float16`` on CUDA for speed. Raises ``FileNotFoundError`` when the folder is
    missing and ``ValueError`` when it is not a loadable diffusers pipeline.
    """
    return _load("inpaint", str(Path(checkpoint_dir).expanduser().resolve()), str(torch.device(device)),
                 dtype or torch.float32)


def load_img2img(checkpoint_dir: str | Path, device="cpu", dtype: torch.dtype | None = None):
    """Like ``load_inpainter`` for an image-to-image pipeline (``AutoPipelineForImage2Image``).

    The checkpoint must have a plain UNet (latent channels in); an inpainting-only checkpoint
    (9 input channels) is refused with a ``ValueError`` that says so.
    """
    return _load("img2img", str(Path(checkpoint_dir).expanduser().resolve()), str(torch.device(device)),
                 dtype or torch.float32)


def native_tile(pipe) -> int:
    """The pipeline's native square resolution in px (``unet.sample_size * vae_scale_factor``)."""
    size = pipe.unet.config.sample_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return int(size) * int(pipe.vae_scale_factor)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``[0, length)`` with at least ``overlap`` px overlap.

    The last tile is aligned to the end (it may overlap its neighbour by more).

    >>> tile_starts(96, 32, 8)
    [0, 24, 48, 64]
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_window(tile: int, overlap: int, ramp_before: bool, ramp_after: bool,
                device=None, dtype=torch.float32) -> torch.Tensor:
    """1-D blending weight ``(tile,)`` in (0, 1]: a raised-cosine ramp over ``overlap`` px on each
    side that has a neighbouring tile, 1 elsewhere. Never exactly 0, so the normalised blend of
    all covering tiles is defined wherever a tile ran."""
    w = torch.ones(tile, device=device, dtype=dtype)
    if overlap > 0:
        i = torch.arange(overlap, device=device, dtype=dtype)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / overlap)
        if ramp_before:
            w[:overlap] = ramp
        if ramp_after:
            w[tile - overlap:] = ramp.flip(0)
    return w


def blend_weight(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """Composite weight ``(B, 1, H, W)`` in [0, 1] for a fill region ``mask`` (> 0.5 = fill).

    0 everywhere outside the region; inside it rises by ``1 / (feather + 1)`` per px of
    (chessboard) depth and reaches 1 at ``feather + 1`` px from the region's edge, so the
    generated content fades in *inside* the mask and outside pixels stay exact.
    """
    region = (mask > 0.5).to(torch.float32)
    acc, level = region.clone(), region
    for _ in range(feather):
        level = erode(level, 1)
        acc = acc + level
    return (acc / (feather + 1)).to(mask.dtype if mask.is_floating_point() else torch.float32)


def _tile_seed(seed: int, y0: int, x0: int) -> int:
    return (int(seed) * 1_000_003 + y0 * 65_537 + x0) % (2 ** 63 - 1)


def _run_tile(pipe, tile_srgb: torch.Tensor, tile_mask: torch.Tensor, *, prompt: str, negative_prompt: str,
              seed: int, steps: int, guidance_scale: float) -> torch.Tensor:
    device = pipe.device
    dtype = pipe.unet.dtype if getattr(pipe, "unet", None) is not None else torch.float32
    generator = torch.Generator(device=device).manual_seed(seed)
    h, w = tile_srgb.shape[-2:]
    out = pipe(prompt=prompt, negative_prompt=negative_prompt or None,
               image=tile_srgb.to(device=device, dtype=dtype), mask_image=tile_mask.to(device=device, dtype=dtype),
               height=h, width=w, num_inference_steps=steps, guidance_scale=guidance_scale,
               generator=generator, output_type="pt").images
    return out.to(device=tile_srgb.device, dtype=torch.float32)


def inpaint(pipe, image: torch.Tensor, mask: torch.Tensor, *, prompt: str = "", negative_prompt: str = "",
            seed: int = 0, steps: int = 30, guidance_scale: float = 7.5, tile: int | None = None,
            overlap: int | None = None, feather: int = 2) -> torch.Tensor:
    """Regenerate the masked pixels of ``image`` with a diffusers inpainting pipeline, tile by tile.

    Args:
        pipe: an inpainting pipeline (``load_inpainter``); called once per tile that holds
            masked pixels, with ``output_type="pt"``.
        image: ``(B, 3, H, W)`` float linear RGB in [0, 1], any device.
        mask: ``(B, 1, H, W)``; pixels > 0.5 are regenerated, everything else is kept exactly.
        prompt, negative_prompt, steps, guidance_scale: passed to the pipeline.
        seed: noise seed; each tile's ``torch.Generator`` (on the pipeline's device) is seeded
            from it and the tile's position.
        tile: tile side in px (multiple of 8); default the model's native size (``native_tile``).
            Images smaller than a tile are replicate-padded to one tile.
        overlap: px shared by neighbouring tiles, cross-faded with raised-cosine ramps;
            default ``tile // 4``; must be < ``tile / 2``.
        feather: px over which the generated content fades in inside the mask's edge.

    Returns:
        ``(B, 3, H, W)`` float32 linear RGB in [0, 1] on ``image``'s device. Where ``mask <= 0.5``
        the values are bit-identical to ``image``.

    The model sees sRGB (linear -> sRGB in, sRGB -> linear out) and a mask dilated by the VAE's
    downscale factor so that thin defects survive the move to latent resolution; the composite
    uses the undilated mask.
    """
    check_shape(image, "image", channels=3)
    check_shape(mask, "mask", channels=1, like=image)
    tile = native_tile(pipe) if tile is None else int(tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    if tile < 8 or tile % 8:
        raise ValueError(f"tile must be a positive multiple of 8 px, got {tile}")
    if not 0 <= 2 * overlap < tile:
        raise ValueError(f"overlap must be in [0, tile/2) = [0, {tile // 2}), got {overlap}")
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    out = image.clone()
    for b in range(image.shape[0]):
        region = (mask[b:b + 1] > 0.5).to(torch.float32)
        if not bool(region.any()):
            continue
        generated = _generate(pipe, image[b:b + 1].float(), region, prompt=prompt,
                              negative_prompt=negative_prompt, seed=seed, steps=steps,
                              guidance_scale=guidance_scale, tile=tile, overlap=overlap)
        w = blend_weight(region, feather)
        src = image[b:b + 1]
        mixed = (src.float() + w * (generated - src.float())).clamp(0, 1).to(image.dtype)
        out[b:b + 1] = torch.where(w > 0, mixed, src)
    return out


def _generate(pipe, image: torch.Tensor, region: torch.Tensor, *, prompt, negative_prompt, seed, steps,
              guidance_scale, tile, overlap) -> torch.Tensor:
    """The tile-blended generation ``(1, 3, H, W)`` linear; meaningful only where ``region`` is 1."""
    H, W = image.shape[-2:]
    ph, pw = max(0, tile - H), max(0, tile - W)
    srgb = linear_to_srgb(image)
    model_mask = dilate(region, int(getattr(pipe, "vae_scale_factor", 8)))
    if ph or pw:
        srgb = F.pad(srgb, (0, pw, 0, ph), mode="replicate")
        region = F.pad(region, (0, pw, 0, ph))
        model_mask = F.pad(model_mask, (0, pw, 0, ph))
    Hp, Wp = srgb.shape[-2:]
    ys, xs = tile_starts(Hp, tile, overlap), tile_starts(Wp, tile, overlap)
    acc = torch.zeros((1, 3, Hp, Wp), device=image.device, dtype=torch.float32)
    weight = torch.zeros((1, 1, Hp, Wp), device=image.device, dtype=torch.float32)
    for iy, y0 in enumerate(ys):
        wy = tile_window(tile, overlap, iy > 0, iy < len(ys) - 1, image.device)
        for ix, x0 in enumerate(xs):
            if not bool(region[..., y0:y0 + tile, x0:x0 + tile].any()):
                continue
            wx = tile_window(tile, overlap, ix > 0, ix < len(xs) - 1, image.device)
            result = _run_tile(pipe, srgb[..., y0:y0 + tile, x0:x0 + tile],
                               model_mask[..., y0:y0 + tile, x0:x0 + tile], prompt=prompt,
                               negative_prompt=negative_prompt, seed=_tile_seed(seed, y0, x0), steps=steps,
                               guidance_scale=guidance_scale)
            win = (wy[:, None] * wx[None, :])[None, None]
            acc[..., y0:y0 + tile, x0:x0 + tile] += srgb_to_linear(result.clamp(0, 1)) * win
            weight[..., y0:y0 + tile, x0:x0 + tile] += win
    blended = acc / weight.clamp_min(1e-12)
    return blended[..., :H, :W]


def _cover(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale ``x`` (B,C,h,w) to cover ``size`` keeping its aspect, then centre-crop to it."""
    h, w = x.shape[-2:]
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    mode = "area" if s < 1 else "bilinear"
    x = F.interpolate(x, size=(nh, nw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def restyle_background(pipe, reference: torch.Tensor, size: tuple[int, int], *, prompt: str = "",
                       negative_prompt: str = "", seed: int = 0, strength: float = 0.6, steps: int = 30,
                       guidance_scale: float = 7.5) -> torch.Tensor:
    """A styled-scene backdrop ``(1, 3, H, W)`` from a reference photo, by img2img.

    Args:
        pipe: an image-to-image pipeline (``load_img2img``).
        reference: ``(1, 3, h, w)`` float linear RGB in [0, 1], any size and device.
        size: ``(H, W)`` of the backdrop to return (the image it goes behind).
        strength: how far from the reference the model may go, in (0, 1]; ``strength * steps``
            must be at least 1.
        prompt, negative_prompt, seed, steps, guidance_scale: as for ``inpaint``.

    Returns:
        ``(1, 3, H, W)`` float32 linear RGB in [0, 1] on ``reference``'s device.

    The reference is scaled to cover the aspect of ``size`` and centre-cropped; the model runs
    at its native long edge (sides rounded to multiples of 8) and the result is resized to
    ``size`` bilinearly: a backdrop is out of focus behind the piece, so its resolution is the
    model's, not the camera's.
    """
    check_shape(reference, "reference", channels=3)
    if reference.shape[0] != 1:
        raise ValueError(f"reference: expected one image (1, 3, h, w), got {tuple(reference.shape)}")
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if int(steps * strength) < 1:
        raise ValueError(f"steps * strength must be >= 1 (got {steps} * {strength})")
    native = native_tile(pipe)
    s = native / max(H, W)
    wh, ww = (max(8, int(round(H * s / 8)) * 8), max(8, int(round(W * s / 8)) * 8))
    src = linear_to_srgb(_cover(reference.float(), (wh, ww)))
    device = pipe.device
    dtype = pipe.unet.dtype if getattr(pipe, "unet", None) is not None else torch.float32
    generator = torch.Generator(device=device).manual_seed(int(seed))
    out = pipe(prompt=prompt, negative_prompt=negative_prompt or None, image=src.to(device=device, dtype=dtype),
               strength=strength, num_inference_steps=steps, guidance_scale=guidance_scale,
               generator=generator, output_type="pt").images
    out = srgb_to_linear(out.to(device=reference.device, dtype=torch.float32).clamp(0, 1))
    if (wh, ww) != (H, W):
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)
