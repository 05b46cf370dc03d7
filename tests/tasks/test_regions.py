"""tasks.regions: the faster 8-connected labelling gives OpenCV's default labelling, label for label."""

from __future__ import annotations

import cv2
import numpy as np

from tasks.regions import parts


def test_parts_are_opencv_s_default_labels_stats_and_centroids():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 200, 2)
        mask = (rng.random((h, w)) < rng.uniform(0.05, 0.7)).astype(np.uint8)
        n, labels, stats, centroids = parts(mask)
        n0, labels0, stats0, centroids0 = cv2.connectedComponentsWithStats(mask, connectivity=8)
        assert n == n0 and np.array_equal(labels, labels0) and np.array_equal(stats, stats0)
        assert np.allclose(centroids, centroids0)


def test_holes_are_the_background_regions_off_the_frame_s_border():
    from tasks.regions import holes

    rng = np.random.default_rng(1)
    for k in range(60):
        h, w = rng.integers(1, 150, 2)
        mask = (rng.random((h, w)) < rng.uniform(0.1, 0.8)).astype(np.uint8)
        if k % 3 == 0:      # thicker walls: larger holes, and masks that reach the border
            mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        n0, labels0, stats0, _ = cv2.connectedComponentsWithStats(1 - mask, connectivity=4)
        x, y, bw, bh = stats0[:, 0], stats0[:, 1], stats0[:, 2], stats0[:, 3]
        enclosed = np.flatnonzero((x > 0) & (y > 0) & (x + bw < w) & (y + bh < h))
        enclosed = enclosed[enclosed > 0]
        n, labels, stats = holes(mask)
        assert n - 1 == len(enclosed)
        expected = {tuple(stats0[j]): frozenset(np.flatnonzero(labels0 == j)) for j in enclosed}
        assert {tuple(stats[j]): frozenset(np.flatnonzero(labels == j)) for j in range(1, n)} == expected
        assert not labels[mask > 0].any()
