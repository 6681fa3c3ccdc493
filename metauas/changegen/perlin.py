"""Perlin noise for the `local` change (the DRAEM recipe), in three interchangeable ways.

`numpy` is DRAEM's `rand_perlin_2d` vectorised over the whole image (gradients on a
res x res lattice, fade 6t^5-15t^4+10t^3); it is the default because it measured the
fastest (docs/benchmarks.md, `metauas bench perlin`). `pnoise2` calls the `noise`
package once per pixel, the way the design card names it; `coarse` samples `pnoise2`
on a grid of a few points per lattice cell and upscales bicubically. All three take
their randomness only from the given numpy Generator.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

METHODS = ("numpy", "pnoise2", "coarse")
MAX_LOG2_SCALE = 6  # k is drawn in 0..5 per axis, as DRAEM
COARSE_POINTS_PER_CELL = 4


def fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_numpy(rng: np.random.Generator, side: int, res: tuple[int, int]) -> np.ndarray:
    """DRAEM's rand_perlin_2d: `side` must be divisible by both lattice resolutions.

    Same values as DRAEM's (to 1e-6), but float32 and computed on a (cell row, row in
    cell, cell column, column in cell) view, so the lattice gradients broadcast
    instead of being repeated to full size: ~10x faster at 512 px.
    """
    ry, rx = res
    dy, dx = side // ry, side // rx
    yy = (np.arange(dy, dtype=np.float32) * np.float32(ry / side))[None, :, None, None]
    xx = (np.arange(dx, dtype=np.float32) * np.float32(rx / side))[None, None, None, :]
    angles = 2 * math.pi * rng.random((ry + 1, rx + 1))
    gy, gx = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def corner(oy: int, ox: int) -> np.ndarray:
        cell = (slice(oy, oy + ry), slice(ox, ox + rx))
        return (yy - oy) * gy[cell][:, None, :, None] + (xx - ox) * gx[cell][:, None, :, None]

    ty, tx = fade(yy), fade(xx)
    n00, n01 = corner(0, 0), corner(0, 1)
    top = n00 + ty * (corner(1, 0) - n00)
    bottom = n01 + ty * (corner(1, 1) - n01)
    return (np.float32(math.sqrt(2)) * (top + tx * (bottom - top))).reshape(side, side)


def _pnoise_grid(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """`noise.pnoise2` at lattice coordinates ys x xs, with a random base and offset.

    pnoise2's lattice gradients come from a fixed table, so randomness is a random
    offset into its 256-periodic lattice plus a random `base`; scaled by sqrt(2) like
    DRAEM's so the 0.5 threshold keeps a comparable meaning.
    """
    import noise

    base = int(rng.integers(0, 256))
    oy, ox = rng.integers(0, 256, size=2)
    out = np.empty((len(ys), len(xs)), np.float64)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            out[i, j] = noise.pnoise2(float(x + ox), float(y + oy), repeatx=1024, repeaty=1024, base=base)
    return math.sqrt(2) * out


def perlin_pnoise2(rng: np.random.Generator, side: int, res: tuple[int, int]) -> np.ndarray:
    ry, rx = res
    return _pnoise_grid(rng, np.arange(side) * ry / side, np.arange(side) * rx / side)


def _aligned(res: int, side: int) -> np.ndarray:
    """Lattice coordinates of COARSE_POINTS_PER_CELL samples per cell, placed where
    cv2.resize's pixel-centre mapping puts them among the `side` output pixels."""
    n = res * COARSE_POINTS_PER_CELL
    return ((np.arange(n) + 0.5) * side / n - 0.5) * res / side


def perlin_coarse(rng: np.random.Generator, side: int, res: tuple[int, int]) -> np.ndarray:
    grid = _pnoise_grid(rng, _aligned(res[0], side), _aligned(res[1], side))
    return cv2.resize(grid.astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)


_IMPLEMENTATIONS = {"numpy": perlin_numpy, "pnoise2": perlin_pnoise2, "coarse": perlin_coarse}


def perlin_noise(rng: np.random.Generator, h: int, w: int, method: str = "numpy") -> tuple[np.ndarray, dict]:
    """Noise of shape (h, w) with scale 2^k per axis, rotated by a random angle in
    [-90, 90] degrees (zero fill outside, as imgaug's Affine). Returns noise, params."""
    ky, kx = (int(k) for k in rng.integers(0, MAX_LOG2_SCALE, size=2))
    side = -(-max(h, w) // 2 ** (MAX_LOG2_SCALE - 1)) * 2 ** (MAX_LOG2_SCALE - 1)
    field = _IMPLEMENTATIONS[method](rng, side, (2**ky, 2**kx))[:h, :w].astype(np.float32)
    angle = float(rng.uniform(-90, 90))
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rotated = cv2.warpAffine(field, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return rotated, {"scale": [2**ky, 2**kx], "angle": round(angle, 3), "method": method}


def perlin_mask(rng: np.random.Generator, h: int, w: int, method: str = "numpy") -> tuple[np.ndarray, dict]:
    """Boolean mask = rotated noise > 0.5 (may be empty: the caller redraws)."""
    field, params = perlin_noise(rng, h, w, method)
    return field > 0.5, params
