"""Tests for HoleNet (models.holenet): its windows, its shipped weights, and what the cut-out does with it."""

from __future__ import annotations

import numpy as np
import pytest

from models.holenet import CHANNELS, DEFAULT_WEIGHTS, SCALARS, WINDOW, HoleNet, facet_probability, load_holenet, windows
from tasks import regions


def _ring_with_hole(h=120, w=160, r=6):
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - 60) ** 2 + (xx - 80) ** 2 < 40 ** 2).astype(np.uint8)
    mask[(yy - 60) ** 2 + (xx - 90) ** 2 < r ** 2] = 0
    return mask


def test_a_window_is_centred_on_its_hole_and_scaled_to_it():
    mask = _ring_with_hole()
    enc = np.full(mask.shape + (3,), 0.9, np.float32)
    enc[mask > 0] = (0.8, 0.6, 0.3)
    backdrop = np.full_like(enc, 0.9)
    n, labels, stats = regions.holes(mask)
    assert n == 2
    x, s = windows(enc, backdrop, mask, labels, stats, [1])
    assert x.shape == (1, CHANNELS, WINDOW, WINDOW) and s.shape == (1, SCALARS)
    hole, piece = x[0, 6], x[0, 7]
    # the hole sits in the middle of its window, the piece all round it
    assert hole[WINDOW // 2, WINDOW // 2] > 0.9 and hole[0, 0] == 0 and hole[-1, -1] == 0
    assert piece[0, 0] == 1 and piece[WINDOW // 2, WINDOW // 2] == 0
    # the departure from the backdrop: none in the hole, the metal's on the piece
    assert abs(x[0, 3:6, WINDOW // 2, WINDOW // 2]).max() < 1e-6
    assert x[0, 3:6, 0, 0].min() < -0.1
    # its share of the piece (log10) and its light against the backdrop's
    assert s[0, 0] == pytest.approx(np.log10(stats[1, 4] / mask.sum()), abs=1e-5)
    assert s[0, 1] == pytest.approx(1.0, abs=1e-5)
    # a hole twice the size gets a window twice the size: the same picture
    big = np.kron(mask, np.ones((2, 2), np.uint8))
    n2, labels2, stats2 = regions.holes(big)
    x2, s2 = windows(np.kron(enc, np.ones((2, 2, 1), np.float32)), np.kron(backdrop, np.ones((2, 2, 1), np.float32)),
                     big, labels2, stats2, [1])
    assert np.abs(x2[0, 6] - x[0, 6]).mean() < 0.05
    assert s2[0, 2] == pytest.approx(s[0, 2] + 1, abs=0.1)


def test_no_holes_no_windows():
    x, s = windows(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32), np.ones((8, 8), np.uint8),
                   np.zeros((8, 8), np.int32), np.zeros((1, 5), np.int32), [])
    assert x.shape == (0, CHANNELS, WINDOW, WINDOW)
    assert facet_probability(load_holenet(), (x, s)).shape == (0,)


def test_weights_load_small_and_cached():
    net = load_holenet()
    assert isinstance(net, HoleNet) and not net.training
    assert DEFAULT_WEIGHTS.stat().st_size < 1024 * 1024
    assert load_holenet() is net


def test_missing_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="models.holenet.train"):
        load_holenet(tmp_path / "nope.pt")
