"""Procedurally generated scenes: a textured background with textured shape instances
whose masks are known exactly — a COCO-like source made in memory.

Ten photographs are too few for a model to generalise from; these scenes add endless
variety of objects, textures and occlusions at no storage cost. A scene is a pure
function of its seed, so any worker renders the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from metauas.changegen.textures import random_texture

SHAPES = ("ellipse", "rectangle", "polygon", "blob")


def _shape_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """One filled shape of a random kind, 8%..45% of the side, anywhere in the frame."""
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    mask = np.zeros((size, size), np.uint8)
    radius = float(rng.uniform(0.08, 0.45)) * size / 2
    cx, cy = (float(v) for v in rng.uniform(radius * 0.5, size - radius * 0.5, size=2))
    angle = float(rng.uniform(0, 360))
    if kind == "ellipse":
        axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.4, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, angle, 0, 360, 1, -1)
    elif kind == "rectangle":
        box = ((cx, cy), (2 * radius, 2 * radius * float(rng.uniform(0.3, 1.0))), angle)
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    else:
        n = int(rng.integers(3, 9)) if kind == "polygon" else 16
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        spread = (0.5, 1.0) if kind == "polygon" else (0.75, 1.0)
        r = radius * rng.uniform(*spread, n)
        pts: np.ndarray = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)
        if kind == "blob":
            pts = cv2.approxPolyDP(pts.astype(np.float32), 0.5, True).reshape(-1, 2)
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    return mask.astype(bool), kind


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Fill `mask` with a fresh texture, edges softened inwards only, in place;
    all work is done in the mask's bounding box."""
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    m = mask[box]
    fill = random_texture(rng, *m.shape)
    shade = cv2.GaussianBlur(m.astype(np.float32), (0, 0), float(rng.uniform(0.6, 1.5)))
    alpha = (shade * m)[..., None]  # soft inside, never outside the mask
    image[box] = (image[box] * (1 - alpha) + fill * alpha).round().astype(np.uint8)


def render_scene(
    rng: np.random.Generator, size: int, min_area: float
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Background + 1..6 shapes painted back to front; later shapes occlude earlier
    ones, so each instance mask is what remains visible. Instances below `min_area`
    of the frame after occlusion are dropped."""
    image = random_texture(rng, size)
    masks: list[np.ndarray] = []
    kinds: list[str] = []
    for _ in range(int(rng.integers(1, 7))):
        mask, kind = _shape_mask(rng, size)
        if not mask.any():
            continue
        _paint(image, mask, rng)
        masks = [m & ~mask for m in masks]
        masks.append(mask)
        kinds.append(kind)
    keep = [i for i, m in enumerate(masks) if m.mean() >= min_area]
    return image, [masks[i] for i in keep], [kinds[i] for i in keep]
