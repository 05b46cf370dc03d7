"""QA metrics on synthetic frames whose answers are known (qa/metrics.py, qa/faults.py)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from infra.presets import load_preset
from qa import faults
from qa.evidence import EVIDENCE_DOCS
from qa.held import backdrop_cast
from qa.metrics import (FLOW_METRICS, METRIC_DOCS, at_full_size, compute_metrics, edge_halo, edge_halos, hue_shift,
                        mask_holes, outline_share, skeleton, thin_retention)
from tasks.color import rgb_to_lab
from tasks.frame import Frame
from tasks.ops import gaussian_blur

H, W = 96, 128


def _disc_alpha(r: int = 30) -> torch.Tensor:
    m = np.zeros((H, W), np.float32)
    cv2.circle(m, (W // 2, H // 2), r, 1.0, -1)
    return torch.from_numpy(m)[None, None]


def _textured(seed: int = 0) -> torch.Tensor:
    """Gold-ish piece with fine checker detail, on a light grey backdrop."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    checker = (((yy // 2) + (xx // 2)) % 2).float()[None, None]
    gold = torch.tensor([0.80, 0.55, 0.22]).view(1, 3, 1, 1)
    piece = gold * (0.6 + 0.4 * checker) + 0.01 * torch.rand(1, 3, H, W, generator=g)
    alpha = _disc_alpha()
    return alpha * piece + (1 - alpha) * 0.6, alpha


def _pair(image: torch.Tensor, alpha: torch.Tensor, after: torch.Tensor | None = None) -> tuple[Frame, Frame]:
    fg = image if after is None else after
    composite = alpha * fg + (1 - alpha)
    reference = Frame(image)
    masks = {"metal": alpha.clone(), "piece": alpha.clone()}
    return reference, Frame(composite, alpha=alpha, foreground=fg, masks=masks)


def test_every_metric_is_documented_and_computed():
    image, alpha = _textured()
    m = compute_metrics(*_pair(image, alpha))
    # set by the flow (sensor dust, upscale) or gathered by qa.evidence, not by compute_metrics
    assert set(m) | set(FLOW_METRICS) | set(EVIDENCE_DOCS) == set(METRIC_DOCS)
    assert not set(m) & set(FLOW_METRICS)
    assert all(isinstance(v, float) for v in m.values())


def test_identity_is_perfect():
    image, alpha = _textured()
    m = compute_metrics(*_pair(image, alpha))
    assert m["delta_e_mean"] == pytest.approx(0, abs=1e-4)
    assert m["detail_retention"] == pytest.approx(1.0)
    assert m["edge_recall"] == 1.0
    assert m["hue_shift_metal"] == pytest.approx(0, abs=1e-3)
    assert m["hue_shift_stone"] == 0.0  # no stones mask: nothing to shift
    assert m["background_a"] == pytest.approx(0, abs=0.05) and m["background_b"] == pytest.approx(0, abs=0.05)
    assert m["mask_holes"] == 0 and m["mask_components"] == 1
    assert m["edge_halo"] == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize("degrees", [5.0, -12.0])
def test_hue_rotation_is_measured_in_degrees(degrees):
    image, alpha = _textured()
    rotated = faults.rotate_hue(image, degrees, alpha)
    where = alpha > 0.5
    assert hue_shift(image, rotated, where) == pytest.approx(abs(degrees), abs=0.05)
    m = compute_metrics(*_pair(image, alpha, rotated))
    assert m["hue_shift_metal"] == pytest.approx(abs(degrees), abs=0.1)


def test_lab_round_trip():
    rgb = torch.rand(1, 3, 8, 8) * 0.9 + 0.05
    assert torch.allclose(faults.lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_blur_loses_detail():
    image, alpha = _textured()
    blurred = gaussian_blur(image, 1.5)
    m = compute_metrics(*_pair(image, alpha, blurred))
    assert m["detail_retention"] < 0.2
    assert m["edge_recall"] < 0.5


def test_mask_holes_counts_enclosed_background():
    m = np.zeros((50, 50), bool)
    m[10:40, 10:40] = True
    assert mask_holes(m) == (0, 0.0)
    m[20:30, 20:30] = False  # one 10x10 hole
    count, share = mask_holes(m)
    assert count == 1 and share == pytest.approx(100 / 900)
    m[12, 12] = False  # a 1 px pinhole is matting noise
    assert mask_holes(m)[0] == 1
    m[0:50, 25] = False  # cut open to the border: no longer enclosed... both halves
    assert mask_holes(m)[0] == 0


def test_backdrop_cast_reads_lab_of_the_backdrop():
    alpha = _disc_alpha(10)
    grey = torch.full((1, 3, H, W), 0.4)
    assert backdrop_cast(grey, alpha) == pytest.approx((0.0, 0.0), abs=1e-3)
    warm = grey * torch.tensor([1.1, 1.0, 0.85]).view(1, 3, 1, 1)
    lab = rgb_to_lab(warm)[0, :, 0, 0]
    a, b = backdrop_cast(warm, alpha)
    assert (a, b) == pytest.approx((float(lab[1]), float(lab[2])), abs=1e-3)
    assert b > 5  # yellow
    # the piece itself and its surroundings are not read
    coloured = torch.where(_disc_alpha(20) > 0, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1), grey)
    assert backdrop_cast(coloured, alpha) == pytest.approx((0.0, 0.0), abs=1e-3)


def _wire_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 3 px dark wire on white (sRGB luminance) and its exact mask."""
    y = np.ones((H, W), np.float32)
    mask = np.zeros((H, W), np.uint8)
    cv2.line(mask, (10, 48), (118, 48), 1, 3)
    y[mask > 0] = 0.3
    return y, mask > 0


def test_thin_retention_and_gap():
    y, wire = _wire_scene()
    kept, gap = thin_retention(y, wire)
    assert kept == pytest.approx(1.0) and gap == 0
    chopped = wire.copy()
    chopped[:, 60:80] = False  # a 20 px cut across the wire
    kept, gap = thin_retention(y, chopped)
    assert gap == pytest.approx(20, abs=3)
    assert kept < 0.9


def test_thin_gap_ignores_lint_away_from_the_piece():
    y, wire = _wire_scene()
    cv2.line(y, (10, 60), (40, 60), 0.3, 1)  # lint 11 px below the wire
    assert thin_retention(y, wire)[1] == 0


def test_skeleton_of_a_bar_is_a_line():
    bar = np.zeros((20, 40), bool)
    bar[8:13, 5:35] = True
    sk = skeleton(bar)
    assert sk[10, 8:32].all() and sk.sum() < 45


def test_edge_halo():
    image, alpha = _textured()
    assert edge_halo(image, alpha) == pytest.approx(0, abs=1e-4)
    reference, result = _pair(image, alpha)
    _, bled = faults.halo(reference, result)
    assert edge_halo(bled.foreground, bled.alpha) > 1.5
    assert torch.equal(bled.alpha > 0.5, alpha > 0.5)  # the outline does not move


def test_a_fringe_a_few_frame_pixels_wide_is_read_at_full_size():
    """``edge_halos`` on the piece's box gives compute_metrics' values; a 3 px fringe of the old backdrop,
    which the frame's level 2 (``qa.held.qa_level``) shrinks to under its ring 2-4 px out, is seen there."""
    image, alpha = _textured()
    reference, result = _pair(image, alpha)
    _, bled = faults.halo(reference, result, width=3)
    m = compute_metrics(reference, bled)
    assert edge_halos(bled) == {"edge_halo": m["edge_halo"], "edge_halo_dark": m["edge_halo_dark"]}
    level = compute_metrics(reference.shrunk_by(2), bled.shrunk_by(2))
    assert level["edge_halo"] < 0.8 < edge_halos(bled)["edge_halo"]


def test_the_outline_share_tells_a_thin_cut_out_from_a_solid_one_at_full_size():
    """A solid disc's outline is a few percent of it; a band 4 px wide is half outline, so half a pixel of
    error along it costs a quarter of its IoU: over the catalog rule's 0.1 (``fine_outline``). Read at a
    24 MP frame's level 2 the share doubles, so the flow reads it on the full-size frame (``at_full_size``)."""
    yy, xx = torch.meshgrid(torch.arange(240.0), torch.arange(240.0), indexing="ij")
    r = torch.hypot(yy - 120, xx - 120)[None, None]
    disc, band = (r < 80).float(), ((r < 80) & (r >= 76)).float()
    assert 0.02 < outline_share(disc) < 0.06
    assert outline_share(band) > 0.4
    assert outline_share(None) == 0.0 and outline_share(torch.zeros_like(disc)) == 0.0
    rule = next(r for r in load_preset("catalog").qa if r.column == "outline_share")
    assert rule.reason == "fine_outline" and outline_share(disc) < rule.max < outline_share(band)
    frame = Frame(torch.full((1, 3, 240, 240), 0.5), alpha=disc)
    level = compute_metrics(Frame(frame.image).shrunk_by(2), frame.shrunk_by(2))["outline_share"]
    assert at_full_size(frame)["outline_share"] == pytest.approx(outline_share(disc))
    assert level == pytest.approx(2 * outline_share(disc), rel=0.15)
    # the flow hands compute_metrics the full-size frame beside the level: the share is read on it
    given = compute_metrics(Frame(frame.image).shrunk_by(2), frame.shrunk_by(2), full=frame)["outline_share"]
    assert given == at_full_size(frame)["outline_share"]


def test_faults_move_their_metric():
    image, alpha = _textured()
    reference, result = _pair(image, alpha)
    clean = compute_metrics(reference, result)
    rng = np.random.default_rng(0)
    smooth = compute_metrics(*faults.inject("oversmooth", reference, result, rng))
    assert smooth["detail_retention"] < 0.5 * clean["detail_retention"]
    shifted = compute_metrics(*faults.inject("hue_metal", reference, result, rng))
    assert shifted["hue_shift_metal"] == pytest.approx(6.0, abs=0.2)
    assert faults.inject("hue_stone", reference, result, rng) is None  # no stones mask
    cast = compute_metrics(*faults.inject("cast", reference, result, rng))
    assert math.hypot(cast["background_a"], cast["background_b"]) > 2.5
    assert cast["delta_e_mean"] < 1.0  # left in by neutralize: the retouch kept it
    assert faults.inject("chop", reference, result, rng) is None  # a disc has nothing thin
    with pytest.raises(ValueError, match="unknown fault"):
        faults.inject("nope", reference, result, rng)
    assert set(faults.FAULTS.values()) <= {"detail_loss", "color_drift", "color_cast", "mask_suspect"}


def test_chop_cuts_a_wire():
    y, wire = _wire_scene()
    image = torch.from_numpy(np.repeat(y[None], 3, 0))[None] ** 2.2
    alpha = torch.from_numpy(wire.astype(np.float32))[None, None]
    reference, result = _pair(image, alpha)
    _, chopped = faults.chop(reference, result, np.random.default_rng(1), radius=8)
    removed = int((alpha > 0.5).sum() - (chopped.alpha > 0.5).sum())
    assert 30 <= removed <= 100
    m = compute_metrics(reference, chopped)
    assert m["thin_gap"] >= 12 * 1000 / W  # per 1000 px of the long edge
