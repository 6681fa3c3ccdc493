"""Small and thin masks for the `local` change: the shapes of real surface defects.

DRAEM's Perlin masks (the `perlin` kind, the paper's) cover 2-8% of the image in many
fragments; real defects of industrial parts are often one small component: a pit or
blowhole a few pixels across, a scratch or crack 1-6 px wide and long, a stain
(docs/quality.md, "Synthetic data", measures both). Each kind here draws one such mask
from the sample's RNG only (so a pair stays a pure function of (seed, index)), with sizes
given as fractions of the image side:

- `blob`: one ellipse with a noisy rim, diameter 3-12% of the side (pits, blowholes,
  dents; 4-15 px at 128);
- `stroke`: a polyline of 1-4 segments turning up to 50 degrees, 15-60% of the side long,
  0.8-3.5% wide (at least 1 px), sometimes with a side branch (scratches, cracks);
- `stain`: DRAEM's Perlin noise at its finer scales, kept inside one ellipse 8-30% of the
  side across (spots, stains, small corrosion).

The `local` change fills them DRAEM-style (another image or a texture, augmented, blended)
or as an intensity change (a darker or brighter spot, soft-edged inside the mask).
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import cv2
import numpy as np

from metauas.changegen.perlin import perlin_numpy

LocalMaskKind = Literal["perlin", "blob", "stroke", "stain"]  # the kinds of `local` change masks
KINDS: tuple[LocalMaskKind, ...] = typing.get_args(LocalMaskKind)


def _ellipse_distance(size: int, cy: float, cx: float, a: float, b: float, angle: float) -> np.ndarray:
    """Normalised elliptic radius (1 on the rim) of every pixel."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cos, sin = math.cos(angle), math.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _coarse_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a cells x cells random grid upscaled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def blob_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    diameter = size * float(rng.uniform(0.03, 0.12))
    aspect = float(rng.uniform(1.0, 2.5))
    a, b = 0.5 * diameter * math.sqrt(aspect), 0.5 * diameter / math.sqrt(aspect)
    angle = float(rng.uniform(0, math.pi))
    cy, cx = (float(v) for v in rng.uniform(0.1 * size, 0.9 * size, size=2))
    roughness = float(rng.uniform(0.0, 0.4))
    r = _ellipse_distance(size, cy, cx, max(a, 1.0), max(b, 1.0), angle)
    mask = r + roughness * _coarse_noise(rng, size, max(4, size // 16)) < 1.0
    return mask, {
        "kind": "blob",
        "diameter": round(diameter, 2),
        "aspect": round(aspect, 3),
        "roughness": round(roughness, 3),
        "at": [round(cy, 1), round(cx, 1)],
    }


def stroke_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    length = size * float(rng.uniform(0.15, 0.6))
    width = max(1, int(round(size * float(rng.uniform(0.008, 0.035)))))
    segments = int(rng.integers(1, 5))
    y, x = (float(v) for v in rng.uniform(0.15 * size, 0.85 * size, size=2))
    heading = float(rng.uniform(0, 2 * math.pi))
    points = [(x, y)]
    for _ in range(segments):
        heading += float(rng.uniform(-1, 1)) * math.radians(50)
        x += math.cos(heading) * length / segments
        y += math.sin(heading) * length / segments
        points.append((x, y))
    mask = np.zeros((size, size), np.uint8)
    scale = 16  # sub-pixel vertices (cv2's shift), so short segments keep their angle
    lines = [np.round(np.array(points) * scale).astype(np.int32)]
    branch = bool(rng.random() < 0.3)
    if branch:
        start = points[int(rng.integers(0, len(points)))]
        turn = heading + float(rng.choice([-1, 1])) * float(rng.uniform(0.3, 1.2))
        tip = (start[0] + math.cos(turn) * length * 0.4, start[1] + math.sin(turn) * length * 0.4)
        lines.append(np.round(np.array([start, tip]) * scale).astype(np.int32))
    cv2.polylines(mask, lines, False, 1, thickness=width, lineType=cv2.LINE_8, shift=4)
    return mask > 0, {
        "kind": "stroke",
        "length": round(length, 2),
        "width": width,
        "segments": segments,
        "branch": branch,
    }


def stain_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    side = -(-size // 32) * 32
    k = int(rng.integers(3, 6))  # Perlin lattice 8..32 cells: the finer half of DRAEM's scales
    field = perlin_numpy(rng, side, (2**k, 2**k))[:size, :size]
    threshold = float(rng.uniform(0.2, 0.5))
    diameter = size * float(rng.uniform(0.08, 0.3))
    cy, cx = (float(v) for v in rng.uniform(0.1 * size, 0.9 * size, size=2))
    angle = float(rng.uniform(0, math.pi))
    aspect = float(rng.uniform(1.0, 2.0))
    r = _ellipse_distance(size, cy, cx, 0.5 * diameter * math.sqrt(aspect), 0.5 * diameter / math.sqrt(aspect), angle)
    return (field > threshold) & (r < 1.0), {
        "kind": "stain",
        "scale": 2**k,
        "threshold": round(threshold, 3),
        "diameter": round(diameter, 2),
    }


MASKS = {"blob": blob_mask, "stroke": stroke_mask, "stain": stain_mask}


def intensity_fill(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The image with the masked pixels shifted darker or brighter by 30-120 grey levels
    (a little per-channel tint), soft-edged INSIDE the mask: pixels outside are unchanged."""
    delta = float(rng.uniform(30, 120)) * (1 if rng.random() < 0.5 else -1)
    tint = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    soft = float(rng.uniform(0.0, 1.5))
    alpha = mask.astype(np.float32)
    if soft > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), soft) * alpha
    shifted = image.astype(np.float32) + alpha[..., None] * delta * tint
    query = np.clip(shifted, 0, 255).round().astype(np.uint8)
    np.copyto(query, image, where=~mask[..., None])
    return query, {"kind": "intensity", "delta": round(delta, 2), "soft": round(soft, 3)}
