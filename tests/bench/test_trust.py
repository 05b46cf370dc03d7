"""bench/trust.py's tables: what stands between a set and right first time."""

import numpy as np
import pandas as pd

from bench.trust import RIGHT, blockers, cutout_path, failed, is_right, set_stages
from flows.review import parse_set
from infra.shoots import list_shoot
from infra.storage import Location
from tasks.pipeline import stage_params

GOOD = {"iou": 0.98, "holes": 1.0, "thin": 1.0, "de_chroma": 1.0, "lost": 0.0, "pierced": 0, "stray": 0}


def test_failed_names_every_missed_criterion_and_a_missing_figure_misses():
    assert failed(GOOD) == [] and is_right(GOOD)
    assert failed({**GOOD, "iou": 0.9, "pierced": 3}) == ["iou", "pierced"]
    assert failed({**GOOD, "de_chroma": float("nan")}) == ["de_chroma"]      # a lost piece has no colour to grade
    assert set(failed({})) == set(RIGHT)


def test_a_part_cut_out_apart_from_the_piece_is_stray_however_little_iou_it_costs():
    """A 4x4 blob of backdrop beside a 60x60 piece costs 0.4% of IoU; it is one stray part. A part of the
    piece the mask split off, or a 2x2 speck, is not."""
    import numpy as np

    from bench.trust import mask_iou, stray

    true = np.zeros((100, 100), bool)
    true[20:80, 20:80] = True
    pred = true.copy()
    pred[5:9, 90:94] = True                  # backdrop cut out on its own
    pred[1:3, 1:3] = True                    # under 9 px: not seen
    pred[50, 20:80] = False                  # the piece split in two: both halves are piece
    assert mask_iou(pred, true) > 0.97 and stray(pred, true) == 1
    assert stray(true, true) == 0


def test_blockers_count_each_criterion_alone_and_the_right_images_qa_held():
    rows = [
        {"set": "train", **GOOD, "right": True, "status": "exported"},
        {"set": "train", **GOOD, "right": True, "status": "review"},                  # right, held
        {"set": "train", **GOOD, "pierced": 2, "right": False, "status": "review"},    # one fix away
        {"set": "train", **GOOD, "pierced": 2, "iou": 0.7, "right": False, "status": "review"},
        {"set": "val", **GOOD, "holes": 0.5, "right": False, "status": "review"},
        {"set": "real", "right": None, "status": "review"},                            # not graded
    ]
    table = blockers(pd.DataFrame(rows))
    assert list(table.index) == ["train", "val"]
    train, val = table.loc["train"], table.loc["val"]
    assert (train["n"], train["pierced"], train["only_pierced"], train["iou"], train["only_iou"]) == (4, 2, 1, 1, 0)
    assert train["right_held"] == 1 and val["right_held"] == 0
    assert (val["holes"], val["only_holes"]) == (1, 1)


def test_set_stages_writes_each_shoots_sidecar_over_its_own_light(tmp_path):
    """``--set`` reaches ``loupe run`` the way a studio's settings do: through each shoot's shoot.toml,
    keeping what the shoot already says (a studio shoot's light)."""
    studio, train = tmp_path / "studio-1", tmp_path / "train"
    for folder in (studio, train):
        folder.mkdir()
    (studio / "shoot.toml").write_text("[stages.neutralize]\nkelvin = 4854\ntint = 0.0011\n")
    set_stages([studio, train], parse_set(["cutout.band=3", "cutout.method=network", "neutralize.strength=0.5",
                                           "cutout.network_checks=false"]))
    shoots = [list_shoot(Location.of(f)) for f in (studio, train)]
    assert [s.problems for s in shoots] == [(), ()]
    studio_stages, train_stages = (s.stages for s in shoots)
    assert studio_stages == {"neutralize": {"kelvin": 4854, "tint": 0.0011, "strength": 0.5},
                             "cutout": {"band": 3, "method": "network", "network_checks": False}}
    assert train_stages == {"cutout": {"band": 3, "method": "network", "network_checks": False},
                            "neutralize": {"strength": 0.5}}
    params = stage_params(studio_stages)      # what each image's stages are made from
    assert params["cutout"].band == 3 and params["neutralize"].kelvin == 4854 and not params["cutout"].network_checks


def test_cutout_path_reads_which_way_the_cut_out_took_from_its_own_notes():
    """The notes ``cut_out`` writes on a sweep, on a desk (its fit fails: the network) and with a plate."""
    import torch

    from helpers import scene_frame, sim_scene
    from tasks.cutout import CutoutParams, cut_out
    from tasks.frame import Frame

    def path(frame):
        return cutout_path("\n".join(["neutralize: light ~5000 K", *cut_out(frame, CutoutParams()).notes]))

    sweep = scene_frame(sim_scene(0, piece="band", background="white_sweep"))
    desk = scene_frame(sim_scene(0, size=(600, 400), piece="band", background="textured_desk"))
    plate = torch.full_like(sweep.image, float(sweep.image[..., :4, :4].mean()))
    assert (path(sweep), path(desk), path(Frame(sweep.image, plate=plate))) == ("sweep", "network", "plate")
    assert cutout_path("neutralize: light ~5000 K") == ""


def test_network_iou_grades_segnet_alone_against_the_truth_it_is_given():
    """SegNet alone on a simulator band on a white sweep (its training world) finds the band; the same
    mask against the truth moved off the piece scores low: the figure reads the network, not the truth."""
    import numpy as np

    from bench.trust import network_iou
    from models.simulator import render_scene

    scene = render_scene(np.random.default_rng(3), (600, 400), piece="band", background="white_sweep")
    assert network_iou(scene.source, scene.alpha) >= 0.85
    assert network_iou(scene.source, np.roll(scene.alpha, 150, axis=1)) < 0.5


def test_the_plates_set_gives_each_shoot_its_plate_and_its_light_as_a_grey_card_reads_it(tmp_path):
    """The simulator's tint is not neutralize's unit: copied as it was, every plated shoot's colour was
    off (chroma dE 15.8). The light Loupe is given must be the one it reads off a grey card in it."""
    import json
    import tomllib

    from bench.trust import grey_card, write_plate_shoots
    from models.simulator.scene import illuminant_gains
    from tasks.neutralize import blackbody_rgb

    for kelvin, tint in ((2950.0, -0.02), (4100.0, 0.01), (6500.0, 0.0)):
        rgb = illuminant_gains(kelvin, tint)
        read_k, read_t = grey_card(list(rgb))
        assert abs(read_k - kelvin) < 0.05 * kelvin
        assert np.allclose(blackbody_rgb(read_k, read_t), rgb, rtol=0.05)    # the same light, in Loupe's units
    (folder,) = write_plate_shoots(tmp_path, 1, (240, 160))
    shoot = list_shoot(folder)
    assert len(shoot.sources) == 1 and shoot.plate is not None
    light = json.loads(next((folder / "truth").glob("*/meta.json")).read_text())["illuminant"]["rgb"]
    given = tomllib.loads((folder / "shoot.toml").read_text())["stages"]["neutralize"]
    assert (given["kelvin"], given["tint"]) == grey_card(light)


def test_a_shoot_lit_by_its_card_is_given_no_light_in_its_sidecar_but_a_card_loupe_reads_it_off(tmp_path):
    import json

    from bench.trust import write_plate_shoots, write_studio_shoots
    from flows.shoot import plan_shoot
    from tasks.neutralize import blackbody_rgb

    # (a RAW card is read at half size: at 240 px its middle holds too few pixels to average its noise)
    folders = write_plate_shoots(tmp_path, 1, (600, 400), light="card") + \
        write_studio_shoots(tmp_path, 6, (240, 160), light="card")
    for folder in folders:
        assert not (folder / "shoot.toml").exists() and list_shoot(folder).card is not None
        lit = plan_shoot(list_shoot(folder), "catalog")
        given = lit.preset.stages["neutralize"]
        meta = json.loads(next((folder / "truth").glob("*/meta.json")).read_text())
        rgb = meta["illuminant"]["rgb"] if "illuminant" in meta else meta["lighting"]["gains"]
        read = np.array(blackbody_rgb(given["kelvin"], given["tint"]))
        assert np.allclose(read / read[1], np.array(rgb) / rgb[1], rtol=0.02), folder.name   # the light rendered
    (bare,) = write_plate_shoots(tmp_path / "none", 1, (240, 160), light="none")
    assert not (bare / "shoot.toml").exists() and list_shoot(bare).card is None


def test_the_paper_set_is_the_studio_shoots_on_coloured_paper_with_their_plate_and_light(tmp_path):
    import json
    import tomllib

    from bench.trust import set_of, write_sets

    (folder,) = write_sets(tmp_path, ["paper"], 6, (240, 160))
    shoot = list_shoot(folder)
    assert set_of(folder.name) == "paper" and len(shoot.sources) == 6 and shoot.plate is not None
    metas = [json.loads(p.read_text()) for p in (folder / "truth").glob("*/meta.json")]
    assert {m["family"] for m in metas} == {"paper"} and len({m["backdrop"]["paper"] for m in metas}) == 1
    assert "kelvin" in tomllib.loads((folder / "shoot.toml").read_text())["stages"]["neutralize"]


def test_sources_are_graded_in_linear_light_whatever_their_file_type(tmp_path):
    """A JPEG or TIFF is decoded sRGB-encoded: the grades (features lost, dust, SegNet alone, the sheet) read
    it as develop makes it, linear, as a RAW is read. A mid-grey code 128 is 0.216 in linear light."""
    from PIL import Image

    from bench.trust import linear_source

    Image.fromarray(np.full((16, 24, 3), 128, np.uint8)).save(tmp_path / "grey.tif")
    pixels = linear_source(tmp_path / "grey.tif")
    assert pixels.shape == (16, 24, 3)
    assert np.allclose(pixels, ((128 / 255 + 0.055) / 1.055) ** 2.4, atol=1e-4)


def test_another_draw_renders_other_scenes_of_the_same_worlds(tmp_path):
    """``--draw`` shifts every set's seed: the same worlds and the same shoot layout, other scenes."""
    from bench.trust import write_sets
    from models.simulator.writers import read_truth

    def first_truth(folder, draw):
        folders = write_sets(tmp_path / folder, ["train", "val"], 1, (240, 160), draw)
        return [read_truth(next((shoot / "truth").iterdir()))["alpha"] for shoot in folders]

    reported, again, other = first_truth("a", 0), first_truth("b", 0), first_truth("c", 1)
    assert all(np.array_equal(a, b) for a, b in zip(reported, again))
    assert not any(np.array_equal(a, b) for a, b in zip(reported, other))
