"""Textures for procedural scenes and for the `local` change's fill.

Two kinds, both made from the RNG alone so nothing is read from the network: tinted
crops of the grey textures scikit-image ships (brick, grass, gravel), and colour
fields blended by Perlin noise (smooth blotches) or stripes.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from metauas.changegen.perlin import perlin_numpy

SKIMAGE_TEXTURES = ("brick", "grass", "gravel")


@functools.lru_cache(maxsize=None)
def skimage_texture(name: str) -> np.ndarray:
    """A grey uint8 texture shipped with scikit-image."""
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _tint(rng: np.random.Generator, t8: np.ndarray) -> np.ndarray:
    """Map a uint8 field to RGB between two random colours, through a lookup table
    (one pass over the pixels instead of float arithmetic per channel)."""
    lo, hi = random_colour(rng), random_colour(rng)
    ramp = np.arange(256, dtype=np.float32)[:, None] / 255
    lut = (lo + ramp * (hi - lo)).round().astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(cv2.merge([t8, t8, t8]), lut)


def _to_u8(t: np.ndarray) -> np.ndarray:
    """float field in [0, 1] -> uint8, saturating."""
    return np.clip(t * 255 + 0.5, 0, 255).astype(np.uint8)


def tinted_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a scikit-image texture, rescaled, turned and tinted."""
    tex = skimage_texture(SKIMAGE_TEXTURES[int(rng.integers(len(SKIMAGE_TEXTURES)))])
    crop = int(rng.integers(min(64, tex.shape[0]), tex.shape[0] + 1))
    y, x = (int(v) for v in rng.integers(0, tex.shape[0] - crop + 1, size=2))
    patch = np.ascontiguousarray(np.rot90(tex[y : y + crop, x : x + crop], int(rng.integers(4))))
    return _tint(rng, cv2.resize(patch, (w, h), interpolation=cv2.INTER_LINEAR))


def blotch_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two colours blended by low-frequency Perlin noise."""
    res = 2 ** int(rng.integers(0, 4))
    side = -(-max(h, w) // res) * res
    return _tint(rng, _to_u8(perlin_numpy(rng, side, (res, res))[:h, :w] * 0.7 + 0.5))


def stripe_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Soft stripes of two colours at a random angle and period."""
    period = float(rng.uniform(4, max(6, max(h, w) / 4)))
    angle = float(rng.uniform(0, np.pi))
    k = np.float32(2 * np.pi / period)
    cols = np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(angle) * k)
    rows = np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(angle) * k)
    return _tint(rng, _to_u8(0.5 + 0.5 * np.sin(cols + rows)))


_KINDS = (tinted_texture, blotch_texture, stripe_texture)


def random_texture(rng: np.random.Generator, h: int, w: int | None = None) -> np.ndarray:
    """h x w (default square) RGB uint8 texture of a random kind, with a little grain."""
    w = h if w is None else w
    tex = _KINDS[int(rng.integers(len(_KINDS)))](rng, h, w)
    # Grain from OpenCV's RNG, seeded from ours: deterministic and ~5x cheaper than numpy's normal.
    cv2.setRNGSeed(int(rng.integers(2**31)))
    grain = np.empty((h, w), np.int16)
    cv2.randn(grain, 0, float(rng.uniform(0, 8)))  # type: ignore[call-overload]  # OpenCV's stubs want arrays for mean and stddev; its docs take scalars
    return np.clip(tex + grain[..., None], 0, 255).astype(np.uint8)
