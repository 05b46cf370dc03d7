"""One image through flows.retouch: what is staged when QA cannot confirm the light."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from bench.trust import read_cutout
from flows.retouch import retouch_image
from infra.presets import load_preset
from models.simulator import render_scene
from tasks.color import linear_to_srgb, rgb_to_lab


def _band(key: list[int], size: tuple[int, int], background: str):
    return render_scene(np.random.default_rng(key), size, piece="band", metal="yellow_gold", background=background,
                        defects=False)


def _tif(path: Path, linear: np.ndarray) -> Path:
    """``linear`` RGB written as a 16-bit sRGB TIFF at ``path``."""
    tifffile.imwrite(path, (linear_to_srgb(torch.from_numpy(linear)).numpy() * 65535).round().astype(np.uint16))
    return path


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Mean CIELAB (a, b) of (N, 3) linear RGB."""
    lab = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb.T[None, :, :, None])).float())[0, :, :, 0]
    return lab[1:].mean(1).numpy()


@pytest.mark.parametrize("paper", [(1.0, 0.88, 0.72), (0.80, 0.95, 1.0)], ids=["beige", "pale_blue"])
def test_an_unconfirmed_light_leaves_the_colour_as_shot(tmp_path, paper):
    """Plain gold on beige or pale blue paper (|log-chroma| ~0.2): nothing on the piece tells the paper
    from a coloured light, so the image goes to review with its colour as shot, never 'corrected'
    (gold turned greenish or orange)."""
    scene = _band([7, 1], (600, 400), "white_sweep")
    shot = scene.clean * (scene.alpha[..., None] + (1 - scene.alpha[..., None]) * np.array(paper, np.float32))
    source = _tif(tmp_path / "B1_front.tif", shot)

    outcome = retouch_image(source, "b1", load_preset("catalog"), tmp_path / "staged", device="cpu")
    assert outcome.ok and outcome.metrics["cast_unverified"] == 1
    assert any("colour left as shot" in n for n in outcome.notes)
    rgb, alpha = read_cutout(Path(outcome.staged["cutout"]))
    piece = (alpha > 0.99) & (scene.alpha > 0.99)
    assert np.abs(_chroma(rgb[piece]) - _chroma(scene.clean[piece])).max() < 2.0   # gold stays the gold shot


def test_a_small_source_is_never_enlarged_when_the_preset_says_own_size(tmp_path):
    """A 320 px photo under the catalog's 2400/3000 px canvases: by default the canvases keep their size
    (upscale ~7x, the low_resolution rule's business); with small_sources = "own_size" they shrink so
    the piece keeps its source pixels."""
    from PIL import Image

    source = _tif(tmp_path / "S1_front.tif", _band([3, 2], (320, 240), "white_sweep").source)
    preset = load_preset("catalog")
    default = retouch_image(source, "s1", preset, tmp_path / "a", device="cpu")
    own = retouch_image(source, "s1", preset.model_copy(update={"small_sources": "own_size"}), tmp_path / "b",
                        device="cpu")
    assert default.metrics["upscale"] > 4 and own.metrics["upscale"] <= 1.0
    main_spec = next(s for s in preset.exports if s.name == "main")
    assert Image.open(default.staged["main"]).size == (main_spec.long_edge,) * 2
    assert max(Image.open(own.staged["main"]).size) < main_spec.long_edge / 4
    assert preset.digest == load_preset("catalog").model_copy(update={"small_sources": "review"}).digest


def test_a_textured_backdrop_already_left_as_shot_is_not_redone(tmp_path):
    """On a desk neutralize leaves the colour as shot already; when QA then cannot confirm the light,
    nothing is redone: the result is the one neutralize at strength 0 gives (which estimates nothing),
    to the bit, with the note that the light was not confirmed."""
    source = _tif(tmp_path / "D1_front.tif", _band([7, 2], (600, 400), "textured_desk").source)
    preset = load_preset("catalog")
    redone = retouch_image(source, "d1", preset, tmp_path / "a", device="cpu")
    shot = retouch_image(source, "d1", preset, tmp_path / "b", device="cpu",
                         overrides={"stages": {"neutralize": {"strength": 0.0}}})
    assert redone.metrics["cast_unverified"] == 1 and any("textured backdrop" in n for n in redone.notes)
    assert any("could not be confirmed" in n for n in redone.notes)
    assert not any("could not be confirmed" in n for n in shot.notes)
    (rgb, alpha), (rgb0, alpha0) = (read_cutout(Path(o.staged["cutout"])) for o in (redone, shot))
    assert np.array_equal(alpha, alpha0) and np.array_equal(rgb, rgb0)


def test_qa_reads_a_frame_over_the_work_size_at_its_pyramid_level(tmp_path, monkeypatch):
    """A 1200 x 800 frame with ``[stages.cutout] work_size = 600``: QA holds it at half its size, and the
    findings the reviewer is shown are boxes in the frame's pixels (the unconfirmed light's: all of it)."""
    import json

    import flows.retouch as retouch

    held = []
    hold = retouch.hold
    monkeypatch.setattr(retouch, "hold", lambda *args: held.append(hold(*args)) or held[-1])
    scene = _band([7, 1], (1200, 800), "white_sweep")
    shot = scene.clean * (scene.alpha[..., None] + (1 - scene.alpha[..., None]) * np.array((1.0, 0.88, 0.72), np.float32))
    outcome = retouch_image(_tif(tmp_path / "B2_front.tif", shot), "b2", load_preset("catalog"), tmp_path / "staged",
                            device="cpu", overrides={"stages": {"cutout": {"work_size": 600}}})
    assert outcome.ok and outcome.metrics["cast_unverified"] == 1
    assert [h.size for h in held] == [(400, 600)]
    shown = json.loads((tmp_path / "staged" / "preview" / "evidence.json").read_text())
    assert shown["size"] == [1200, 800]
    assert {"code": "cast_unverified", "box": [0, 0, 1200, 800]} in [
        {k: f[k] for k in ("code", "box")} for f in shown["findings"]]
