"""Generative fill (models/generative.py, tasks/fill.py) on tiny randomly initialised pipelines.

The pipelines are built from configs (UNet, VAE, CLIP text encoder with an offline
letter vocabulary, DDIM scheduler), written with ``save_pretrained`` and loaded back through
Loupe's own loaders, so the real diffusers code path runs: tokenizing, VAE encode/decode,
denoising, mask handling. Native tile: 16 latent px * VAE factor 2 = 32 px.
"""

from __future__ import annotations

import json
import string

import pytest
import torch

from helpers import DEVICES
from models.generative import (blend_weight, inpaint, load_img2img, load_inpainter, native_tile,
                               restyle_background, tile_starts, tile_window)
from tasks.fill import SKIP_NOTE, FillParams, compose_scene, fill_defects, large_components, styled_scene
from tasks.frame import Frame

TILE = 32
STEPS = 2


def _tiny_pipelines(root):
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)

    def unet(in_channels):
        return UNet2DConditionModel(
            sample_size=TILE // 2, in_channels=in_channels, out_channels=4, layers_per_block=1,
            block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2, cross_attention_dim=16,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=4, sample_size=TILE,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=16, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:  # single-letter BPE, no merges: built here, nothing downloaded
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    common = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    paths = {"inpaint": root / "tiny-inpaint", "img2img": root / "tiny-img2img"}
    StableDiffusionInpaintPipeline(unet=unet(9), **common).save_pretrained(paths["inpaint"])
    StableDiffusionImg2ImgPipeline(unet=unet(4), **common).save_pretrained(paths["img2img"])
    return paths


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are a few kFLOP per pixel: intra-op threads only add overhead, and on a
    busy 2-core machine their spin-waits made this file ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _tiny_pipelines(tmp_path_factory.mktemp("diffusers"))


class Counting:
    """Wraps a pipeline: counts calls and records each call's image size."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kw):
        self.calls.append(tuple(kw["image"].shape[-2:]))
        return self.pipe(**kw)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def smooth_image(h, w, device="cpu", seed=0):
    """A smooth random linear-RGB image in [0.05, 0.95] (a studio-like gradient with soft texture)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, max(2, h // 8), max(2, w // 8)), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.05 + 0.9 * img).to(device)


def box_mask(h, w, y0, y1, x0, x1, device="cpu"):
    m = torch.zeros((1, 1, h, w), device=device)
    m[..., y0:y1, x0:x1] = 1
    return m


def test_tile_grid_helpers():
    assert tile_starts(96, 32, 8) == [0, 24, 48, 64]
    assert tile_starts(96, 32, 0) == [0, 32, 64]
    assert tile_starts(20, 32, 8) == [0]
    w = tile_window(32, 8, True, True)
    assert w.shape == (32,) and float(w.min()) > 0 and bool((w[8:24] == 1).all())
    assert bool((w[:8].diff() > 0).all()) and torch.allclose(w[:8], w[24:].flip(0))
    # two neighbouring windows sum to 1 across an exact-overlap seam: no brightness dip
    assert torch.allclose(w[24:] + w[:8], torch.ones(8))
    assert bool((tile_window(32, 8, False, False) == 1).all())
    m = box_mask(16, 16, 4, 12, 4, 12)
    bw = blend_weight(m, 2)
    assert bool((bw[m == 0] == 0).all()) and float(bw[0, 0, 8, 8]) == 1
    assert abs(float(bw[0, 0, 4, 8]) - 1 / 3) < 1e-6 and abs(float(bw[0, 0, 5, 8]) - 2 / 3) < 1e-6


def test_loader_errors(tmp_path, ckpt):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found.*stages.fill"):
        load_inpainter(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        load_inpainter(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionInpaintPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="could not load"):
        load_inpainter(tmp_path / "broken")
    with pytest.raises(ValueError, match="inpainting-only UNet"):
        load_img2img(ckpt["inpaint"])


def test_loader_is_cached_and_local(ckpt):
    a = load_inpainter(ckpt["inpaint"], "cpu")
    assert load_inpainter(str(ckpt["inpaint"]), torch.device("cpu")) is a
    assert type(a).__name__ == "StableDiffusionInpaintPipeline"
    assert native_tile(a) == TILE and a.device.type == "cpu"


@pytest.mark.parametrize("device", DEVICES)
def test_outside_mask_bit_identical_inside_changed(ckpt, device):
    pipe = load_inpainter(ckpt["inpaint"], device)
    img = smooth_image(48, 56, device)
    mask = box_mask(48, 56, 10, 30, 14, 40, device)
    out = inpaint(pipe, img, mask, prompt="clean gold", seed=1, steps=STEPS, overlap=8)
    assert out.shape == img.shape and out.dtype == torch.float32 and out.device == img.device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    outside = (mask == 0).expand_as(img)
    assert torch.equal(out[outside], img[outside])
    core = box_mask(48, 56, 13, 27, 17, 37, device).bool().expand_as(img)  # fully weighted part
    assert float((out[core] - img[core]).abs().mean()) > 0.02
    assert float((out[core] != img[core]).float().mean()) > 0.9


def test_image_smaller_than_tile_and_batch(ckpt):
    pipe = Counting(load_inpainter(ckpt["inpaint"]))
    img = torch.cat([smooth_image(20, 27, seed=s) for s in (0, 1)])
    mask = torch.cat([box_mask(20, 27, 5, 15, 6, 20), torch.zeros((1, 1, 20, 27))])
    out = inpaint(pipe, img, mask, seed=0, steps=STEPS)
    assert pipe.calls == [(TILE, TILE)]  # padded to one tile; the unmasked second image is not run
    assert torch.equal(out[1], img[1])
    assert torch.equal(out[0][(mask[0] == 0).expand(3, -1, -1)], img[0][(mask[0] == 0).expand(3, -1, -1)])
    assert float((out[0] - img[0]).abs().max()) > 0.05


def test_seed_determinism(ckpt):
    pipe = load_inpainter(ckpt["inpaint"])
    img = smooth_image(40, 40)
    mask = box_mask(40, 40, 8, 30, 8, 30)
    a = inpaint(pipe, img, mask, prompt="gold", seed=7, steps=STEPS)
    b = inpaint(pipe, img, mask, prompt="gold", seed=7, steps=STEPS)
    c = inpaint(pipe, img, mask, prompt="gold", seed=8, steps=STEPS)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 0.05


class FlatTiles(Counting):
    """Runs the real pipeline, then paints each tile's result one flat grey, a different one per call.

    A tiny random model paints pixel-level noise, which hides a seam; flat tiles of different
    greys make any seam a measurable step, and the blend between them a measurable ramp."""

    GREYS = (0.2, 0.8, 0.45, 0.65)

    def __call__(self, **kw):
        out = super().__call__(**kw)
        out.images = torch.full_like(out.images, self.GREYS[(len(self.calls) - 1) % len(self.GREYS)])
        return out


def _max_steps(x):
    """Largest |difference| between horizontally and vertically adjacent pixels of (1,3,h,w)."""
    return float(torch.maximum((x[..., 1:] - x[..., :-1]).abs().amax(), (x[..., 1:, :] - x[..., :-1, :]).abs().amax()))


def test_tiling_runs_only_masked_tiles_and_leaves_no_seam(ckpt):
    from tasks.color import srgb_to_linear

    H = W = 3 * TILE  # tile starts 0, 24, 48, 64 on each axis: 16 tiles
    img = smooth_image(H, W, seed=3)
    mask = box_mask(H, W, 36, 60, 16, 48)  # rows hit tiles y0=24, 48; columns x0=0, 24
    pipe = Counting(load_inpainter(ckpt["inpaint"]))
    out = inpaint(pipe, img, mask, prompt="gold", seed=0, steps=STEPS, overlap=8)
    assert len(pipe.calls) == 4 and set(pipe.calls) == {(TILE, TILE)}
    outside = (mask == 0).expand_as(img)
    assert torch.equal(out[outside], img[outside])
    core = (slice(None), slice(None), slice(39, 57), slice(19, 45))  # fully weighted (feather 2 px)
    # real content: the step across the tile edges (columns 24 and 32, row 48 and 56) is no
    # larger than the steps inside the tiles
    band = out[core]
    dx = (band[..., 1:] - band[..., :-1]).abs().mean(dim=(0, 1, 2))  # dx[i]: columns 19+i -> 20+i
    seam_x = float(dx[[24 - 20, 32 - 20]].mean())
    assert seam_x <= 1.5 * float(dx.mean()), (seam_x, float(dx.mean()))
    # flat tiles: blended, the largest step between neighbours is a fraction of the colour
    # difference between tiles; butted together (overlap 0), the step is the whole difference
    flat = FlatTiles(pipe.pipe)
    blended = inpaint(flat, img, mask, prompt="gold", seed=0, steps=STEPS, overlap=8)
    spread = float(srgb_to_linear(torch.tensor(0.8)) - srgb_to_linear(torch.tensor(0.2)))
    assert len(flat.calls) == 4
    assert _max_steps(blended[core]) <= 0.25 * spread, (_max_steps(blended[core]), spread)
    butted_pipe = FlatTiles(pipe.pipe)
    butted = inpaint(butted_pipe, img, mask, prompt="gold", seed=0, steps=STEPS, overlap=0)
    assert len(butted_pipe.calls) == 2  # tiles start at 0, 32, 64: rows in y0=32, columns in x0=0, 32
    jump = spread  # the first two tiles, 0.2 and 0.8, meet at column 32
    assert _max_steps(butted[core]) >= 0.9 * jump > 2 * _max_steps(blended[core])


@pytest.mark.parametrize("device", DEVICES)
def test_restyle_background(ckpt, device):
    pipe = load_img2img(ckpt["img2img"], device)
    ref = smooth_image(40, 64, device, seed=5)
    a = restyle_background(pipe, ref, (50, 70), prompt="marble", seed=3, strength=0.75, steps=4)
    b = restyle_background(pipe, ref, (50, 70), prompt="marble", seed=3, strength=0.75, steps=4)
    c = restyle_background(pipe, ref, (50, 70), prompt="marble", seed=4, strength=0.75, steps=4)
    assert a.shape == (1, 3, 50, 70) and a.dtype == torch.float32 and a.device == ref.device
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and float((a - c).abs().max()) > 0.01
    with pytest.raises(ValueError, match="steps \\* strength"):
        restyle_background(pipe, ref, (50, 70), strength=0.2, steps=2)


def test_stage_without_checkpoint_passes_through():
    frame = Frame(smooth_image(24, 24)).with_masks(defects=box_mask(24, 24, 2, 20, 2, 20))
    out = fill_defects(frame, FillParams())
    assert out.image is frame.image and out.masks == frame.masks and out.flags == ()
    assert out.notes == (SKIP_NOTE,)


def test_large_components():
    m = box_mask(30, 30, 2, 12, 2, 12) + box_mask(30, 30, 20, 22, 20, 22)  # 100 px and 4 px
    big, n = large_components(m, 50)
    assert n == 1 and float(big.sum()) == 100 and float(big[0, 0, 21, 21]) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_stage_fills_only_large_components(ckpt, device):
    img = smooth_image(64, 64, device, seed=2)
    big = box_mask(64, 64, 8, 24, 8, 24, device)      # 256 px: generated
    small = box_mask(64, 64, 44, 47, 44, 47, device)  # 9 px: dust's classical fill stays
    refl = box_mask(64, 64, 40, 52, 6, 14, device)    # a reflection: generated whatever its size
    frame = Frame(img).with_masks(defects=big + small, reflections=refl)
    params = FillParams(checkpoint=str(ckpt["inpaint"]), min_area=50, steps=STEPS, tile=TILE, overlap=8)
    out = fill_defects(frame, params)
    assert out.image.device == img.device and out.flags == ()
    gen = out.masks["generated"]
    target = (big + refl) > 0
    assert bool((gen[~target] == 0).all()) and bool((gen[target] > 0).all())
    keep = (~target).expand_as(img)
    assert torch.equal(out.image[keep], img[keep])  # small speck and everything else untouched
    core = box_mask(64, 64, 11, 21, 11, 21, device).bool().expand_as(img)
    assert float((out.image[core] - img[core]).abs().mean()) > 0.02
    assert out.notes[-1].startswith("fill:") and "1 defect(s)" in out.notes[-1] and "reflections" in out.notes[-1]
    again = fill_defects(frame, params)  # same seed, same device: same pixels
    assert torch.equal(again.image, out.image)
    # nothing large enough and reflections off: unchanged, said so
    quiet = fill_defects(frame, params.model_copy(update={"min_area": 1000, "reflections": False}))
    assert quiet.image is frame.image and "nothing generated" in quiet.notes[-1]


def test_stage_missing_checkpoint_raises(tmp_path):
    frame = Frame(smooth_image(24, 24)).with_masks(defects=box_mask(24, 24, 2, 20, 2, 20))
    with pytest.raises(FileNotFoundError, match="not found"):
        fill_defects(frame, FillParams(checkpoint=str(tmp_path / "missing"), min_area=1))


def test_params_validation():
    with pytest.raises(ValueError):
        FillParams(tile=100)  # not a multiple of 8
    with pytest.raises(ValueError, match="half the tile"):
        FillParams(tile=64, overlap=32)
    with pytest.raises(ValueError):
        FillParams(nonsense=1)
    with pytest.raises(ValueError, match="overlap"):
        inpaint(None, smooth_image(8, 8), box_mask(8, 8, 2, 4, 2, 4), tile=32, overlap=16)


def test_styled_scene_keeps_piece_pixels(ckpt):
    img = smooth_image(40, 48, seed=9)
    alpha = torch.zeros((1, 1, 40, 48))
    alpha[..., 10:30, 12:36] = 1
    alpha[..., 9, 12:36] = 0.5  # a soft edge row
    frame = Frame(img, alpha=alpha)
    ref = smooth_image(30, 30, seed=4)
    params = FillParams(scene_checkpoint=str(ckpt["img2img"]), steps=4, strength=0.75, seed=1)
    out = styled_scene(frame, ref, params)
    piece = (alpha == 1).expand_as(img)
    assert torch.equal(out.image[piece], img[piece])
    back = (alpha == 0).expand_as(img)
    assert float((out.image[back] - img[back]).abs().mean()) > 0.02
    assert out.notes[-1] == "fill: piece composed on a styled scene"
    assert torch.equal(styled_scene(frame, ref, params).image, out.image)
    assert "scene skipped" in styled_scene(frame, ref, FillParams()).notes[-1]
    # compose_scene prefers the decontaminated foreground when background has set it
    fg = torch.full_like(img, 0.3)
    composed = compose_scene(frame.replace(foreground=fg), torch.zeros_like(img))
    assert torch.equal(composed.image[piece], fg[piece]) and float(composed.image[back].abs().max()) == 0
