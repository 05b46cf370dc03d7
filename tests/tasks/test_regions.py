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
