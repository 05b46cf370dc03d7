"""sensor_dust: spots shared by a shoot's frames are found and divided out; moving detail is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import DEVICES, to_tensor
from models.simulator import render_image, sensor_dust_gain, shoot_sensor_dust
from tasks.frame import Frame, luminance
from tasks.sensor_dust import (BackdropTexture, SensorDustParams, correct_sensor_dust, dust_evidence, find_sensor_dust,
                               remove_sensor_dust, spots_for, spots_mask, survey_sample, working_size)

SEED, FRAMES, SPOTS, SIZE = 2, 6, 4, (384, 256)   # seed 2: every spot on plain backdrop in most frames, two under a piece once


def _source(seed, k, n_spots):
    return to_tensor(render_image(seed, k, SIZE, sensor_dust=n_spots).source)


@pytest.fixture(scope="module")
def shoot():
    """Six small frames with four sensor-dust spots, and the same frames without them."""
    scenes = [render_image(SEED, k, SIZE, sensor_dust=SPOTS) for k in range(FRAMES)]
    dusty = [to_tensor(s.source) for s in scenes]
    clean = [_source(SEED, k, 0) for k in range(FRAMES)]
    return dusty, clean, [dust_evidence(f) for f in dusty], [torch.from_numpy(s.alpha) for s in scenes]


def _matches(spot, truth):
    w, h = SIZE
    return math.hypot((spot.x - truth["x"]) * w, (spot.y - truth["y"]) * h) <= max(truth["r"] * w, 2.0)


def test_finds_the_spots_the_shoot_shares(shoot):
    _, _, evidence, _ = shoot
    truth = shoot_sensor_dust(SEED, SPOTS)
    spots = find_sensor_dust(evidence)
    found = [t for t in truth if any(_matches(s, t) for s in spots)]
    assert len(found) >= 0.9 * len(truth), (truth, spots)
    assert all(any(_matches(s, t) for t in truth) for s in spots), "a spot where there is no sensor dust"
    for s in spots:
        t = next(t for t in truth if _matches(s, t))
        assert s.strength == pytest.approx(t["strength"], abs=0.06)
        assert s.share >= 0.6


def test_no_spots_without_sensor_dust(shoot):
    _, clean, _, _ = shoot
    assert find_sensor_dust([dust_evidence(f) for f in clean]) == []
    other = [dust_evidence(_source(4, k, 0)) for k in range(FRAMES)]
    assert find_sensor_dust(other) == []


def test_a_darkening_in_one_frame_only_is_not_sensor_dust(shoot):
    _, clean, _, _ = shoot
    frames = [f.clone() for f in clean]
    h, w = frames[0].shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = 1 - 0.2 * (((xx - 60) ** 2 + (yy - 50) ** 2) <= 9).float()
    frames[2] = frames[2] * blob          # exactly what a dust shadow looks like, but in one frame
    spots = find_sensor_dust([dust_evidence(f) for f in frames])
    assert spots == []
    frames[4] = frames[4] * blob          # in two of six frames: still not most of the shoot
    assert find_sensor_dust([dust_evidence(f) for f in frames]) == []
    for k in range(FRAMES):               # in every frame: that is sensor dust
        frames[k] = clean[k] * blob
    spots = find_sensor_dust([dust_evidence(f) for f in frames])
    assert len(spots) == 1 and abs(spots[0].x * w - 60.5) < 1.5 and abs(spots[0].y * h - 50.5) < 1.5


def test_a_still_textured_desk_under_every_frame_is_not_sensor_dust():
    """A studio shooting a collection on one wooden desk: its grain stays put from frame to frame, as dust
    does, but dust is only counted where it darkens a plain surround (seen: 14 and 5 false spots on these
    two desks, 72 on the validation family's desk shoot, each divided out of every frame)."""
    size = (768, 512)
    found = []
    for desk_seed, piece_seed in ((7, 11), (3, 5)):
        desk = next(s for s in (render_image(desk_seed, k, size, defects=False) for k in range(20))
                    if s.meta["background"] == "textured_desk")
        evidence = []
        for k in range(8):
            scene = render_image(piece_seed, k, size, defects=False)
            alpha = scene.alpha[..., None]
            evidence.append(dust_evidence(to_tensor(alpha * scene.source + (1 - alpha) * desk.source)))
        found += find_sensor_dust(evidence)
    assert len(found) <= 1, [(round(s.x, 3), round(s.y, 3), round(s.strength, 3)) for s in found]


def _on_still_paper(kind: str, frames: int = 8, size=(768, 512)):
    """A collection shot on one sheet of the wide world's paper (seed 3): the paper stays put, pieces
    (seed 5) move over it, each frame with its own 1% noise. Returns the frames and the pieces' alphas."""
    from models.simulator.studio import backdrop

    paper, _ = backdrop(np.random.default_rng(3), kind, *size)
    shots, alphas = [], []
    for k in range(frames):
        scene = render_image(5, k, size, defects=False)
        alpha = scene.alpha[..., None]
        grain = 1 + 0.01 * np.random.default_rng(k).standard_normal(paper.shape[:2])[..., None]
        shots.append(to_tensor(np.clip(alpha * scene.source + (1 - alpha) * paper * grain, 0, 1).astype(np.float32)))
        alphas.append(scene.alpha)
    return shots, alphas


def test_a_still_papers_mottle_is_not_sensor_dust():
    """A coloured paper's cloudy mottle stays put from frame to frame, as dust does, and its dark
    clouds are dust-sized; but it brightens as much as it darkens, where dust only darkens (seen: 69
    false spots on this paper, over 100 on a validation family's green paper, every one divided out of
    every frame, pieces included)."""
    shots, _ = _on_still_paper("colored_paper")
    found = find_sensor_dust([dust_evidence(f) for f in shots])
    assert found == [], [(round(s.x, 3), round(s.y, 3), round(s.strength, 3)) for s in found]


def test_a_still_papers_fibres_are_not_sensor_dust():
    """A beige paper's fibres stay put and only darken, as dust does: the survey alone takes a hundred
    of them for dust, each divided out of every frame, brightening the pieces laid over them. A sensor
    casts a few dozen shadows at most (``max_spots``): past that it is the backdrop's texture."""
    shots, alphas = _on_still_paper("beige_paper")
    evidence = [dust_evidence(f) for f in shots]
    with pytest.raises(BackdropTexture, match="none corrected"):
        find_sensor_dust(evidence)
    spots = find_sensor_dust(evidence, SensorDustParams(max_spots=1000))
    assert len(spots) > 50        # what they were taken for
    touched = sum(int(((remove_sensor_dust(f, spots) / f.clamp_min(1e-4) - 1).abs().amax(1)[0]
                       [torch.from_numpy(a > 0.5)] > 0.01).sum()) for f, a in zip(shots, alphas))
    assert touched > 500          # piece pixels that correction would have brightened


def test_fewer_than_three_frames_find_nothing(shoot):
    _, _, evidence, _ = shoot
    assert find_sensor_dust(evidence[:2]) == []
    with pytest.raises(ValueError, match="one shape"):
        find_sensor_dust([evidence[0], evidence[1], np.ones((10, 12), np.float32)])


def test_correction_restores_backdrop_and_piece(shoot):
    """Divided out, the spots are within 1 % of the same frames shot without the dust."""
    dusty, clean, evidence, alphas = shoot
    spots = find_sensor_dust(evidence)
    truth = [t for t in shoot_sensor_dust(SEED, SPOTS) if any(_matches(s, t) for s in spots)]
    region = torch.from_numpy(sensor_dust_gain(truth, *SIZE) < 0.99)
    err = {"backdrop": [[], []], "piece": [[], []]}
    for d, c, alpha in zip(dusty, clean, alphas):
        yc, yd, yr = (luminance(x)[0, 0] for x in (c, d, remove_sensor_dust(d, spots)))
        for name, where in (("backdrop", alpha < 0.02), ("piece", alpha > 0.5)):
            m = region & where & (yc > 0.02)
            err[name][0] += ((yd - yc).abs() / yc)[m].tolist()
            err[name][1] += ((yr - yc).abs() / yc)[m].tolist()
    for name, (before, after) in err.items():
        assert len(after) > 20, f"no {name} pixels under a found spot"
        assert np.mean(after) < 0.01, (name, np.mean(before), np.mean(after))
        assert np.mean(after) < 0.15 * np.mean(before), name
    # away from the spots nothing changes
    far = torch.from_numpy(sensor_dust_gain(shoot_sensor_dust(SEED, SPOTS), *SIZE) > 0.999)
    out = remove_sensor_dust(dusty[0], spots)
    far &= ~spots_mask(spots, SIZE[1], SIZE[0])[0, 0].bool()
    assert torch.equal(out[..., far], dusty[0][..., far])


@pytest.mark.parametrize("device", DEVICES)
def test_frame_wrapper_mask_note_device(shoot, device):
    dusty, _, evidence, _ = shoot
    spots = find_sensor_dust(evidence)
    frame = Frame(image=dusty[1].to(device))
    out = correct_sensor_dust(frame, spots)
    mask = out.layer("sensor_dust")
    assert out.masks["sensor_dust"].dtype == torch.bool   # 0/1: kept a byte a pixel
    assert mask.shape == (1, 1, SIZE[1], SIZE[0]) and mask.dtype == torch.float32 and mask.device == frame.image.device
    assert out.image.device == frame.image.device and out.image.dtype == torch.float32
    assert out.notes == (f"sensor dust: {len(spots)} spots corrected",)
    truth_area = torch.from_numpy(sensor_dust_gain([t for t in shoot_sensor_dust(SEED, SPOTS)
                                                    if any(_matches(s, t) for s in spots)], *SIZE) < 0.97)
    assert mask[0, 0].cpu()[truth_area].min() == 1.0      # the discs cover every darkened pixel
    assert float(mask.mean()) < 0.02
    assert correct_sensor_dust(frame, []) is frame


def test_evidence_size_depends_on_aspect_only():
    p = SensorDustParams()
    assert working_size(1023, 1535, p.working_edge) == working_size(511, 767, p.working_edge) == (512, 768)
    assert working_size(4000, 6000, p.working_edge) == (512, 768)
    assert working_size(256, 384, p.working_edge) == (256, 384)
    ev = dust_evidence(torch.full((1, 3, 200, 300), 0.4))
    assert ev.shape == (1, 1, 200, 300) and torch.allclose(ev, torch.ones_like(ev), atol=1e-4)


def test_evidence_from_luminance_alone_is_the_colour_frames(shoot):
    """A grey decode (a RAW's luminance read straight from its mosaic) gives the survey the same map."""
    dusty, _, evidence, _ = shoot
    assert torch.allclose(dust_evidence(luminance(dusty[0])), evidence[0], atol=1e-5)


def test_the_survey_reads_an_even_sample_of_a_long_shoot():
    frames = [f"IMG_{k:04d}" for k in range(1000)]
    sample = survey_sample(frames, 24)
    assert len(sample) == len(set(sample)) == 24
    assert sample[0] == frames[0] and sample[-1] == frames[-1] and sample == sorted(sample)
    gaps = np.diff([frames.index(f) for f in sample])
    assert gaps.min() >= 43 and gaps.max() <= 44          # evenly spread, not the first 24
    assert survey_sample(frames[:5], 24) == frames[:5]


def test_a_sample_of_a_long_shoot_finds_what_all_of_it_finds():
    found = {"every": 0, "sample": 0}
    for seed in (2, 3):
        truth = shoot_sensor_dust(seed, SPOTS)
        evidence = [dust_evidence(_source(seed, k, SPOTS)) for k in range(48)]
        every = find_sensor_dust(evidence)
        sample = find_sensor_dust(survey_sample(evidence, SensorDustParams().survey_frames))
        for name, spots in (("every", every), ("sample", sample)):
            assert all(any(_matches(s, t) for t in truth) for s in spots), (name, seed)   # nothing false
            found[name] += sum(any(_matches(s, t) for s in spots) for t in truth)
        for s in sample:                                   # the same gain, measured on half the frames
            twin = next(e for e in every if math.hypot(e.x - s.x, e.y - s.y) < 0.01)
            assert s.strength == pytest.approx(twin.strength, abs=0.01)
    # the faintest spot, beside a stronger one, is found by one and not the other (seed 2)
    assert found["every"] == 2 * SPOTS and found["sample"] >= 2 * SPOTS - 1, found


def test_each_frame_gets_the_spots_of_its_own_shape(shoot):
    _, _, evidence, _ = shoot
    spots = find_sensor_dust(evidence)
    found = {(512, 768): spots, (768, 512): spots[:1]}
    assert spots_for(found, 4000, 6000) is spots
    assert spots_for(found, 2000, 3000) is spots          # the survey's half-size decode of the same camera
    assert spots_for(found, 6000, 4000) == spots[:1]       # portrait frames have their own survey
    assert spots_for(found, 1001, 1500) is spots           # (513, 768): a rounding apart
    assert spots_for(found, 1000, 1600) == []              # (480, 768): another camera or crop
    assert spots_for(found, 256, 384) == [] and spots_for({}, 4000, 6000) == []


def test_the_combines_median_is_numpys_to_the_bit():
    """The survey takes thousands of small medians (``_median``, without numpy's checks); a spot's
    strength and share must not move by a bit for it, nor an empty window raise."""
    import warnings

    from tasks.sensor_dust import _median

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # numpy's mean of an empty slice
        for shape in ((22, 37), (22, 38), (7,), (8,), (22, 0), (0,)):
            values = rng.random(shape, dtype=np.float32)
            assert np.array_equal(_median(values), np.median(values, axis=-1), equal_nan=True), shape
