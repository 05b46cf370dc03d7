"""Shoot folders: sources, SKU/view names and the shoot.toml sidecar."""

from infra.shoots import read_shoot


def test_sidecar_sets_preset_background_stages_and_names(tmp_path):
    (tmp_path / "IMG_0042.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "R1001_top.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "shoot.toml").write_text(
        'preset = "catalog"\nbackground = "transparent"\n'
        '[stages.neutralize]\nkelvin = 3200\n[sku]\n"IMG_0042" = "R1001_front"\n')
    shoot = read_shoot(tmp_path)
    assert shoot.preset == "catalog" and shoot.background == "transparent"
    assert shoot.stages == {"neutralize": {"kelvin": 3200}}
    assert [(s.sku, s.view) for s in shoot.sources] == [("R1001", "front"), ("R1001", "top")]


def test_no_sidecar_means_no_overrides(tmp_path):
    (tmp_path / "E2001.tif").write_bytes(b"x")
    shoot = read_shoot(tmp_path)
    assert shoot.preset is None and shoot.background is None and shoot.stages == {}
    assert [(s.sku, s.view) for s in shoot.sources] == [("E2001", "main")]


def test_a_clean_plate_is_the_shoots_backdrop_not_a_source(tmp_path):
    (tmp_path / "R1001_front.jpg").write_bytes(b"x")
    (tmp_path / "studio-b_plate.JPG").write_bytes(b"y")
    shoot = read_shoot(tmp_path)
    assert [s.path.name for s in shoot.sources] == ["R1001_front.jpg"]
    assert shoot.plate.local_path() == tmp_path / "studio-b_plate.JPG"
