"""Labelled parts of a mask, for every stage and QA check that labels one.

OpenCV's default 8-connected labelling (Spaghetti) takes 0.16 s on a 24 MP mask on one thread here;
Grana's block-based scan (BBDT) gives the same labels, stats and centroids in 0.07 s (issue 13: a
cut-out labels a dozen frame-sized masks). 4-connected labelling has one algorithm (SAUF).
"""

from __future__ import annotations

import cv2
import numpy as np


def parts(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.connectedComponentsWithStats(mask, connectivity=8)`` of a uint8 mask: (n, labels, stats, centroids)."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
