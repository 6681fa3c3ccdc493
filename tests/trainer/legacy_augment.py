"""The CPU augmentation exactly as it was before its random draws moved into
`draw_params` (commit 49e5726): the reference the refactored and the device paths are
tested against. Frozen: do not edit."""

from __future__ import annotations

import cv2
import numpy as np

from metauas.trainer.augment import AugmentConfig  # the same options

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)


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
    return cv2.warpAffine(
        image, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


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
    return {
        **pair,
        "prompt": resize(pair["prompt"], shrink),
        "query": resize(pair["query"], shrink),
        "mask": resize(pair["mask"], cv2.INTER_NEAREST),
    }


def _fires(rng: np.random.Generator, probability: float) -> bool:
    """A coin flip that draws nothing when the option is off, so default configs keep
    the random stream (and so the augmentations) they had before these options existed."""
    return probability > 0 and rng.random() < probability


def _rotate_prompt(
    prompt: np.ndarray, mask: np.ndarray, query_to_prompt: np.ndarray, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the prompt about its centre, and drop change the rotated prompt no longer shows.

    The rotation pushes the prompt's corners out of the frame. A query pixel y shows
    content that sits at prompt pixel query_to_prompt(y), which the rotation moves to
    R(query_to_prompt(y)); where that is outside the frame the prompt lost it, and a
    change there is no longer visible in both images, so it leaves the mask.
    """
    size = prompt.shape[0]
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    # dst(y) = ones(M y) with M = rotation ∘ query_to_prompt: 1 where the content survives
    visible = cv2.warpAffine(
        np.ones((size, size), np.uint8),
        _compose(rotation, query_to_prompt),
        (size, size),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
    )
    return _warp(prompt, rotation, size, cv2.INTER_LINEAR), mask * visible


def coarse_dropout(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-4 rectangles, each side 1/10..1/4 of the image's, filled with its mean colour."""
    out = image.copy()
    h, w = image.shape[:2]
    mean = image.reshape(-1, image.shape[2]).mean(axis=0).round().astype(image.dtype)
    for _ in range(rng.integers(1, 5)):
        rh, rw = (int(rng.uniform(0.1, 0.25) * side) for side in (h, w))
        y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        out[y : y + rh, x : x + rw] = mean
    return out


def augment_prompt(
    prompt: np.ndarray, mask: np.ndarray, query_to_prompt: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt-only rotation, rot90, flip and coarse dropout of a square, warped pair.

    The mask lives on the query, so changing only the prompt leaves it as it is, except
    where the rule "a change is only a change if visible in both images" needs it: the
    arbitrary-angle rotation crops the prompt's corners, so change whose counterpart left
    the frame is dropped (see `_rotate_prompt`; `query_to_prompt` maps query to prompt
    pixels, 2x3). rot90 and flips permute a square frame and keep all content. Dropout
    hides prompt content without moving it: the mask stays, so the model learns that a
    region the prompt does not show is no evidence of change. The rotation comes first:
    after a flip its cropped corners would no longer match `query_to_prompt`.
    """
    if _fires(rng, cfg.prompt_rotate):
        prompt, mask = _rotate_prompt(prompt, mask, query_to_prompt, rng.uniform(30, 270))
    if _fires(rng, cfg.prompt_rot90):
        prompt = np.rot90(prompt, k=int(rng.integers(1, 4)))
    if _fires(rng, cfg.prompt_flip):
        prompt = np.flip(prompt, axis=int(rng.integers(0, 2)))
    if _fires(rng, cfg.prompt_dropout):
        prompt = coarse_dropout(prompt, rng)
    return np.ascontiguousarray(prompt), mask


def augment_pair(pair: dict, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Swap, warp prompt vs query+mask independently, augment the prompt alone, jitter
    colours; everything at `size` x `size`."""
    prompt, query, mask = pair["prompt"], pair["query"], pair["mask"]
    if rng.random() < cfg.swap:
        prompt, query = query, prompt
    if rng.random() >= cfg.affine:
        out = resize_pair({**pair, "prompt": prompt, "query": query, "mask": mask}, size)
        prompt, query, mask = out["prompt"], out["query"], out["mask"]
        query_to_prompt = IDENTITY
    else:
        h, w = mask.shape
        resize = _resize_matrix(h, w, size)
        to_prompt = _compose(_random_affine(rng, size, cfg), resize)
        to_query = _compose(_random_affine(rng, size, cfg), resize)
        # source pixels that land inside the warped prompt: dst(x) = ones(to_prompt @ x)
        visible = cv2.warpAffine(
            np.ones((size, size), np.uint8), to_prompt, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        )
        prompt = _warp(prompt, to_prompt, size, cv2.INTER_LINEAR)
        query = _warp(query, to_query, size, cv2.INTER_LINEAR)
        mask = _warp(mask * visible, to_query, size, cv2.INTER_NEAREST)
        query_to_prompt = _compose(to_prompt, cv2.invertAffineTransform(to_query))
    prompt, mask = augment_prompt(prompt, mask, query_to_prompt, cfg, rng)
    prompt = color_jitter(prompt, rng, cfg.jitter)
    query = color_jitter(query, rng, cfg.jitter)
    return {**pair, "prompt": prompt, "query": query, "mask": mask}
