"""Train-time augmentation of change pairs (the CYWS recipe), on uint8 arrays with OpenCV.

Real prompts and queries are never pixel-aligned, so the prompt and the query+mask get
independent random affine warps (the mask follows the query). A change is only a change
if it is visible in both images, so the mask keeps only pixels whose source point lands
inside the warped prompt too. Resizing to the training size is folded into the same
warp, so each image is resampled once.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """CYWS defaults: degrees 30, translate 0.2, scale 0.8-1.5, colour jitter 0.1."""

    swap: float = 0.5  # probability of swapping prompt and query (masks are symmetric)
    affine: float = 0.5  # probability that a pair gets the independent affine warps
    degrees: float = 30.0
    translate: float = 0.2  # fraction of the side
    scale: tuple[float, float] = (0.8, 1.5)
    jitter: float = 0.1  # brightness, contrast, saturation and hue, per image


def _random_affine(rng: np.random.Generator, size: int, cfg: AugmentConfig) -> np.ndarray:
    """A 2x3 matrix rotating/scaling about the centre and translating, in output pixels."""
    angle = rng.uniform(-cfg.degrees, cfg.degrees)
    scale = rng.uniform(*cfg.scale)
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += shift
    return matrix


def _resize_matrix(height: int, width: int, size: int) -> np.ndarray:
    return np.array([[size / width, 0, 0], [0, size / height, 0]], dtype=np.float64)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer ∘ inner for 2x3 affine matrices."""
    full = np.vstack([inner, [0, 0, 1]])
    return outer @ full


def _warp(image: np.ndarray, matrix: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (size, size), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Brightness, contrast, saturation (factors in 1±amount) and hue (±amount turn)."""
    if amount <= 0:
        return image
    b, c, s = rng.uniform(1 - amount, 1 + amount, size=3)
    hue = rng.uniform(-amount, amount)
    x = image.astype(np.float32) * b
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray.mean()) * c + gray.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray[..., None]) * s + gray[..., None]
    x = np.clip(x, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(hue * 180))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def resize_pair(pair: dict, size: int) -> dict:
    """Prompt, query (area/linear) and mask (nearest) resized to size x size."""
    def resize(image: np.ndarray, interpolation: int) -> np.ndarray:
        if image.shape[:2] == (size, size):
            return image
        return cv2.resize(image, (size, size), interpolation=interpolation)

    shrink = cv2.INTER_AREA if pair["prompt"].shape[0] > size else cv2.INTER_LINEAR
    return {**pair, "prompt": resize(pair["prompt"], shrink), "query": resize(pair["query"], shrink),
            "mask": resize(pair["mask"], cv2.INTER_NEAREST)}


def augment_pair(pair: dict, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Swap, warp prompt vs query+mask independently, jitter colours, resize to `size`."""
    prompt, query, mask = pair["prompt"], pair["query"], pair["mask"]
    if rng.random() < cfg.swap:
        prompt, query = query, prompt
    if rng.random() >= cfg.affine:
        out = resize_pair({**pair, "prompt": prompt, "query": query, "mask": mask}, size)
        prompt, query, mask = out["prompt"], out["query"], out["mask"]
    else:
        h, w = mask.shape
        resize = _resize_matrix(h, w, size)
        to_prompt = _compose(_random_affine(rng, size, cfg), resize)
        to_query = _compose(_random_affine(rng, size, cfg), resize)
        # source pixels that land inside the warped prompt: dst(x) = ones(to_prompt @ x)
        visible = cv2.warpAffine(np.ones((size, size), np.uint8), to_prompt, (w, h),
                                 flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        prompt = _warp(prompt, to_prompt, size, cv2.INTER_LINEAR)
        query = _warp(query, to_query, size, cv2.INTER_LINEAR)
        mask = _warp(mask * visible, to_query, size, cv2.INTER_NEAREST)
    prompt = color_jitter(prompt, rng, cfg.jitter)
    query = color_jitter(query, rng, cfg.jitter)
    return {**pair, "prompt": prompt, "query": query, "mask": mask}
