"""End to end: a shoot on coloured paper with its grey card, beside the same shot without one."""

from __future__ import annotations

from bench.trust import write_card
from flows.shoot import run_shoots
from infra.catalog import Catalog
from models.simulator import image_rng, render_scene, write_scene


def test_a_shoots_grey_card_corrects_what_its_coloured_paper_could_not(tmp_path, small_sources_preset,
                                                                        prefect_server, ray_session, capsys):
    scene = render_scene(image_rng(31, 0), (480, 320), background="colored_paper")
    shoots = []
    for name in ("carded", "bare"):
        folder = tmp_path / name
        folder.mkdir()
        write_scene(folder, scene, 0, "jpg")
        shoots.append(folder)
    write_card(shoots[0] / "monday_card.jpg", scene.meta["illuminant"]["rgb"], (480, 320), 0)
    counts = run_shoots(shoots, tmp_path / "out", preset=str(small_sources_preset))
    assert counts["exported"] + counts["review"] == 2          # the card is no source: no row of its own
    said = capsys.readouterr().err
    line = next(s for s in said.splitlines() if s.startswith("shoot carded: grey card monday_card.jpg: light "))
    kelvin = int(line.split("light ")[1].split(" K")[0])
    catalog = Catalog.open(tmp_path / "out" / ".state")
    carded, bare = (catalog.rows(name)[0] for name in ("carded", "bare"))
    assert f"neutralize: light ~{kelvin} K" in carded["notes"]       # every frame takes the card's light
    unsure = {"cast_uncertain", "cast_unverified"}      # neutralize's doubt, and QA's
    assert not unsure & set(carded["reasons"].split(";"))
    assert unsure & set(bare["reasons"].split(";"))      # the paper alone: the light cannot be told from it
    assert abs(kelvin - scene.meta["illuminant"]["kelvin"]) < 0.1 * scene.meta["illuminant"]["kelvin"]
