"""A shoot's grey card: its light read once, before any image, and given to every frame as a known
light (no Ray or Prefect needed)."""

from __future__ import annotations

import pytest

from bench.trust import write_card
from flows.shoot import dry_run, plan_shoots
from models.simulator import image_rng, render_scene, write_scene
from tasks.color import blackbody_rgb

LIGHT = (3400, 0.004)
SIZE = (480, 320)


def _shoot(folder, card=True, sidecar=""):
    """One simulated shot on coloured paper, a grey card under its light (``blackbody_rgb``'s) beside it."""
    folder.mkdir()
    write_scene(folder, render_scene(image_rng(31, 0), SIZE, background="colored_paper"), 0, "jpg")
    if card:
        write_card(folder / "set_card.dng", list(blackbody_rgb(*LIGHT)), SIZE, 0)
    if sidecar:
        (folder / "shoot.toml").write_text(sidecar)
    return folder


def test_the_cards_light_is_every_frames_known_light(tmp_path):
    plan = plan_shoots([_shoot(tmp_path / "s")], "catalog")[0]
    light = plan.preset.stages["neutralize"]
    assert light["kelvin"] == pytest.approx(LIGHT[0], rel=0.01) and light["tint"] == pytest.approx(LIGHT[1], abs=0.0015)
    assert plan.light == f"light {light['kelvin']} K, tint {light['tint']:+.4f}"
    assert [s.path.suffix for s in plan.shoot.sources] == [".jpg"]       # the card is no source
    assert "card     s/set_card.dng  (light " in "\n".join(dry_run([tmp_path / "s"], tmp_path / "out"))
    # without a card the light is left to each frame's backdrop, and the preset's digest differs
    bare = plan_shoots([_shoot(tmp_path / "bare", card=False)], "catalog")[0]
    assert "kelvin" not in bare.preset.stages.get("neutralize", {}) and bare.light == ""
    assert bare.preset.digest != plan.preset.digest


def test_the_studios_own_light_wins_and_a_card_that_cannot_be_read_is_said(tmp_path):
    plan = plan_shoots([_shoot(tmp_path / "s", sidecar="[stages.neutralize]\nkelvin = 5600\n")], "catalog")[0]
    assert plan.preset.stages["neutralize"] == {"kelvin": 5600}
    assert plan.light == "not read: shoot.toml gives the light ([stages.neutralize] kelvin)"

    broken = _shoot(tmp_path / "broken", card=False)
    (broken / "set_card.dng").write_bytes(b"not a raw file" * 40)
    plan = plan_shoots([broken], "catalog")[0]
    assert plan.light.startswith("not read: ") and plan.light.endswith("; the light is read off each frame's backdrop")
    assert "kelvin" not in plan.preset.stages.get("neutralize", {})

    shot = _shoot(tmp_path / "shot", card=False)        # a product shot named as the card: its middle is no card
    next(shot.glob("*.jpg")).rename(shot / "set_card.jpg")
    write_scene(shot, render_scene(image_rng(31, 1), SIZE, background="white_sweep", piece="pave"), 1, "jpg")
    plan = plan_shoots([shot], "catalog")[0]
    assert plan.light.startswith("not read: its middle is no ")
    assert "set_card.jpg" not in [src.path.name for src in plan.shoot.sources]
