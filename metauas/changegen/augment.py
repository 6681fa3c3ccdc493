"""DRAEM's ten colour/geometry augmenters, in numpy + OpenCV (imgaug is unmaintained
and breaks on numpy 2). The `local` change applies 3 of them, drawn without
replacement, to the image or texture that fills the Perlin region.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Aug = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def gamma_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gamma in [0.5, 2], through a 256-entry lookup table."""
    gamma = rng.uniform(0.5, 2.0, size=3)
    lut = (255 * (np.arange(256)[:, None] / 255.0) ** gamma).round().astype(np.uint8)
    return cv2.LUT(img, lut.reshape(256, 1, 3))


def brightness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def sharpness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = cv2.blur(img, (3, 3)).astype(np.float32)
    factor = rng.uniform(0.0, 2.0)  # PIL EnhanceSharpness: 0 blurs, 2 sharpens
    return np.clip(blurred + factor * (img - blurred), 0, 255).astype(np.uint8)


def hue_saturation(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-50, 51)) // 2) % 180  # OpenCV hue is 0..179
    hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-50, 51)), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def solarize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    threshold = int(rng.integers(32, 129))
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def posterize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bits = int(rng.integers(1, 9))
    return (img & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype(np.uint8)


def invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (255 - img).astype(np.uint8)


def autocontrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stretch each channel to 0..255 (PIL's autocontrast without cutoff)."""
    lut = np.empty((256, 1, 3), np.uint8)
    for c, channel in enumerate(cv2.split(img)):
        lo, hi = (int(v) for v in cv2.minMaxLoc(channel)[:2])
        lut[:, 0, c] = np.clip((np.arange(256) - lo) * (255 / max(hi - lo, 1)), 0, 255).round()
    return cv2.LUT(img, lut)


def equalize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], axis=-1)


def rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-45, 45)), 1.0)
    return cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REFLECT_101)


AUGMENTERS: dict[str, Aug] = {
    f.__name__: f
    for f in (
        gamma_contrast,
        brightness,
        sharpness,
        hue_saturation,
        solarize,
        posterize,
        invert,
        autocontrast,
        equalize,
        rotate,
    )
}


def augment3(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Apply 3 of the 10 augmenters in a random order; returns image and their names."""
    names = list(AUGMENTERS)
    chosen = [names[i] for i in rng.choice(len(names), size=3, replace=False)]
    for name in chosen:
        img = AUGMENTERS[name](img, rng)
    return img, chosen
