"""Shoot folders: sources, SKU/view names and the shoot.toml sidecar."""

from infra.shoots import hashed, list_shoot


def test_sidecar_sets_preset_background_stages_and_names(tmp_path):
    (tmp_path / "IMG_0042.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "R1001_top.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "shoot.toml").write_text(
        'preset = "catalog"\nbackground = "transparent"\n'
        '[stages.neutralize]\nkelvin = 3200\n[sku]\n"IMG_0042" = "R1001_front"\n')
    shoot = list_shoot(tmp_path)
    assert shoot.preset == "catalog" and shoot.background == "transparent"
    assert shoot.stages == {"neutralize": {"kelvin": 3200}}
    assert [(s.sku, s.view) for s in shoot.sources] == [("R1001", "front"), ("R1001", "top")]


def test_no_sidecar_means_no_overrides(tmp_path):
    (tmp_path / "E2001.tif").write_bytes(b"x")
    shoot = list_shoot(tmp_path)
    assert shoot.preset is None and shoot.background is None and shoot.stages == {}
    assert [(s.sku, s.view) for s in shoot.sources] == [("E2001", "main")]


def test_a_clean_plate_is_the_shoots_backdrop_not_a_source(tmp_path):
    (tmp_path / "R1001_front.jpg").write_bytes(b"x")
    (tmp_path / "studio-b_plate.JPG").write_bytes(b"y")
    shoot = list_shoot(tmp_path)
    assert [s.path.name for s in shoot.sources] == ["R1001_front.jpg"]
    assert shoot.plate.local_path() == tmp_path / "studio-b_plate.JPG"


def test_a_grey_card_is_the_shoots_light_not_a_source(tmp_path):
    (tmp_path / "R1001_front.jpg").write_bytes(b"x")
    (tmp_path / "monday_card.dng").write_bytes(b"y")
    shoot = list_shoot(tmp_path)
    assert [s.path.name for s in shoot.sources] == ["R1001_front.jpg"]
    assert shoot.card.local_path() == tmp_path / "monday_card.dng" and shoot.plate is None
    (tmp_path / "tuesday_card.jpg").write_bytes(b"z")     # one light a shoot: a second card is said, not used
    shoot = list_shoot(tmp_path)
    assert shoot.card.name == "monday_card.dng" and len(shoot.sources) == 1
    assert shoot.ignored == ("tuesday_card.jpg (a second grey card: monday_card.dng is the shoot's)",)


def test_each_source_is_named_by_its_own_content_in_folder_order(tmp_path):
    """Hashed several at once, each digest stays with its file; a link is named by its target, unread."""
    import hashlib

    contents = {f"R{k:04d}_top.jpg": bytes([k]) * (1000 + 37 * k) for k in range(40)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "R9999_side.jpg").symlink_to("/etc/hostname")
    shoot = hashed(list_shoot(tmp_path))
    assert [s.path.name for s in shoot.sources] == sorted([*contents, "R9999_side.jpg"])
    for source in shoot.sources[:-1]:
        assert source.sha256 == hashlib.sha256(contents[source.path.name]).hexdigest() and not source.refused
    link = shoot.sources[-1]
    assert link.refused.startswith("symlink: R9999_side.jpg points to /etc/hostname")
    assert link.sha256 == hashlib.sha256(b"symlink:R9999_side.jpg->/etc/hostname").hexdigest()
