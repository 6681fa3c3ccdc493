"""Object candidates for images without annotations (the `folder` source).

A user's factory photos have no COCO labels; an unsupervised over-segmentation
(scikit-image's Felzenszwalb graph segmentation) proposes regions, and only
object-like ones are kept: area within bounds, compact (4*pi*A/P^2), solid
(area / convex hull area), and not spanning the frame from border to border.
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 128  # segmentation runs at this side; masks are scaled back up
MIN_COMPACTNESS = 0.25
MIN_SOLIDITY = 0.7
MAX_CANDIDATES = 8


def _object_like(region: np.ndarray, min_area: float, max_area: float) -> float | None:
    """Compactness of an object-like region, or None if it should not be an object."""
    area_frac = region.mean()
    if not min_area <= area_frac <= max_area:
        return None
    h, w = region.shape
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if (rows[0] == 0 and rows[-1] == h - 1) or (cols[0] == 0 and cols[-1] == w - 1):
        return None
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    area, perimeter = cv2.contourArea(contour), cv2.arcLength(contour, True)
    hull = cv2.contourArea(cv2.convexHull(contour))
    if perimeter == 0 or hull == 0:
        return None
    compactness = 4 * np.pi * area / perimeter**2
    if compactness < MIN_COMPACTNESS or area / hull < MIN_SOLIDITY:
        return None
    return float(compactness)


def object_candidates(image: np.ndarray, min_area: float, max_area: float) -> list[np.ndarray]:
    """Up to MAX_CANDIDATES boolean masks (image-sized), most compact first."""
    from skimage.segmentation import felzenszwalb

    size = image.shape[0]
    small = cv2.resize(image, (WORK_SIDE, WORK_SIDE), interpolation=cv2.INTER_AREA)
    labels = felzenszwalb(small, scale=300, sigma=0.8, min_size=max(8, int(min_area * WORK_SIDE**2 / 2)))
    scored = []
    for label in range(int(labels.max()) + 1):
        region = labels == label
        region = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        if not region.any():
            continue
        score = _object_like(region, min_area, max_area)
        if score is not None:
            scored.append((score, label, region))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [
        cv2.resize(region.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
        for _, _, region in scored[:MAX_CANDIDATES]
    ]
