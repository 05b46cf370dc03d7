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
