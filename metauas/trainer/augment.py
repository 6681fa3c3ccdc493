"""Train-time augmentation of change pairs (the CYWS recipe), on uint8 arrays with OpenCV.

Real prompts and queries are never pixel-aligned, so the prompt and the query+mask get
independent random affine warps (the mask follows the query). A change is only a change
if it is visible in both images, so the mask keeps only pixels whose source point lands
inside the warped prompt too. Resizing to the training size is folded into the same
warp, so each image is resampled once.

Prompt-only augmentations (rotations, flips, coarse dropout; DictAS/FDSL use them so one
prompt serves queries in any orientation) come after that warp and are off by default.
So does the resolution jitter (`resample_jitter`), which comes before it: a file stored
at another resolution is the same content, not a change (issue 20). The sensor noise
(`sensor_noise`, also off by default) comes last of all, on the training device
(`device_augment.add_sensor_noise`, from `train.step`): whichever path augmented the pair.

Every random choice of a pair is drawn first, in one fixed order, as `PairParams`
(`draw_params`); applying them is separate (`apply_params` here with OpenCV, or
`device_augment.augment_batch` with batched torch ops on the training device). Both paths
therefore draw the same stream from the same seed, and the draws are the order the
original single-function version made them in (tests/trainer/legacy_augment.py keeps
that version; the OpenCV path reproduces it byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from metauas.configs import Panel, option
from metauas.errors import UserError

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)
MAX_SENSOR_NOISE = 32.0  # grey levels: beyond it the image is mostly noise, not a shot of the scene


_PROMPT_ONLY = "Probability (0 = off) of training prompts (only) getting "


@dataclass(frozen=True)
class AugmentConfig:
    """CYWS defaults: degrees 30, translate 0.2, scale 0.8-1.5, colour jitter 0.1."""

    swap: float = 0.5  # probability of swapping prompt and query (masks are symmetric)
    affine: float = 0.5  # probability that a pair gets the independent affine warps
    degrees: float = 30.0
    translate: float = 0.2  # fraction of the side
    scale: tuple[float, float] = (0.8, 1.5)
    jitter: float = 0.1  # brightness, contrast, saturation and hue, per image
    # prompt-only, after the warp (see augment_prompt); probabilities, 0 = off
    prompt_rot90: float = option(0.0, _PROMPT_ONLY + "a 90/180/270 degree rotation.", Panel.AUGMENT)
    prompt_rotate: float = option(0.0, _PROMPT_ONLY + "a rotation by 30..270 degrees.", Panel.AUGMENT)
    prompt_flip: float = option(0.0, _PROMPT_ONLY + "a horizontal or vertical flip.", Panel.AUGMENT)
    prompt_dropout: float = option(0.0, _PROMPT_ONLY + "1-4 mean-filled rectangles.", Panel.AUGMENT)
    resample_jitter: float = option(
        0.0,
        "Probability (0 = off) of each training image, prompt and query apart, being stored again at 0.5-1x its "
        "resolution (area) and brought back (linear or cubic) before the warp, as another camera or file would "
        "hold it: the model learns that resolution is no change.",
        Panel.AUGMENT,
    )
    sensor_noise: float = option(
        0.0,
        "Largest std, in grey levels of 0..255, of the Gaussian sensor noise each training image, prompt and query "
        "apart, gets after every other augmentation (its std drawn from 0..this, then stored as whole grey levels; "
        "0 = off): two shots of one scene never agree pixel for pixel, and that is no change.",
        Panel.AUGMENT,
    )

    def __post_init__(self) -> None:
        for name in (
            "swap",
            "affine",
            "prompt_rot90",
            "prompt_rotate",
            "prompt_flip",
            "prompt_dropout",
            "resample_jitter",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"`{name}` is a probability: give a value in 0..1, got {value}")
        if not 0 <= self.sensor_noise <= MAX_SENSOR_NOISE:
            most, got = f"{MAX_SENSOR_NOISE:g}", self.sensor_noise
            raise UserError(f"`sensor_noise` is a std in grey levels: give a value in 0..{most}, got {got}")


def _random_affine(rng: np.random.Generator, size: int, cfg: AugmentConfig) -> np.ndarray:
    """A 2x3 matrix rotating/scaling about the centre and translating, in output pixels."""
    angle = rng.uniform(-cfg.degrees, cfg.degrees)
    scale = rng.uniform(*cfg.scale)
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * size
    matrix = np.asarray(cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale), np.float64)
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


Jitter = tuple[float, float, float, float]  # brightness, contrast, saturation factors; hue (turns)


def draw_jitter(rng: np.random.Generator, amount: float) -> Jitter | None:
    """Factors in 1±amount for brightness, contrast, saturation, and a hue shift of ±amount turn."""
    if amount <= 0:
        return None
    b, c, s = rng.uniform(1 - amount, 1 + amount, size=3)  # NumPy float64 scalars: they make the
    return b, c, s, rng.uniform(-amount, amount)  # jitter's arithmetic float64, as it always was


def color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Brightness, contrast, saturation (factors in 1±amount) and hue (±amount turn)."""
    return apply_jitter(image, draw_jitter(rng, amount))


def apply_jitter(image: np.ndarray, jitter: Jitter | None) -> np.ndarray:
    """`draw_jitter`'s factors applied in that order (uint8 in and out; hue in OpenCV's HSV)."""
    if jitter is None:
        return image
    b, c, s, hue = jitter
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


Rect = tuple[int, int, int, int]  # y, x, height, width


def draw_dropout(rng: np.random.Generator, h: int, w: int) -> tuple[Rect, ...]:
    """1-4 rectangles, each side 1/10..1/4 of the image's, anywhere inside it."""
    rects = []
    for _ in range(rng.integers(1, 5)):
        rh, rw = (int(rng.uniform(0.1, 0.25) * side) for side in (h, w))
        y, x = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        rects.append((int(y), int(x), rh, rw))
    return tuple(rects)


def coarse_dropout(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-4 rectangles, each side 1/10..1/4 of the image's, filled with its mean colour."""
    return fill_rects(image, draw_dropout(rng, *image.shape[:2]))


def fill_rects(image: np.ndarray, rects: tuple[Rect, ...]) -> np.ndarray:
    """A copy of `image` with `rects` filled with its (rounded) mean colour."""
    out = image.copy()
    mean = image.reshape(-1, image.shape[2]).mean(axis=0).round().astype(image.dtype)
    for y, x, rh, rw in rects:
        out[y : y + rh, x : x + rw] = mean
    return out


Resample = tuple[float, int]  # the factor an image is stored at (0.5-1), OpenCV's interpolation back up
RESAMPLE_FACTORS, RESAMPLE_BACK = (0.5, 1.0), (cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def draw_resample(rng: np.random.Generator, probability: float) -> Resample | None:
    """A storage factor in 0.5..1 and the interpolation that brings the image back."""
    if not _fires(rng, probability):
        return None
    return float(rng.uniform(*RESAMPLE_FACTORS)), RESAMPLE_BACK[int(rng.integers(0, len(RESAMPLE_BACK)))]


def apply_resample(image: np.ndarray, resample: Resample | None) -> np.ndarray:
    """The image stored at `factor` times its side (area averaging, as a smaller camera or
    file holds it) and interpolated back to its own size: same content, less detail and
    another rendering of its edges."""
    if resample is None:
        return image
    factor, back = resample
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=back)


@dataclass(frozen=True)
class PromptParams:
    """The prompt-only choices of one pair (none fire by default)."""

    rotate: float | None = None  # degrees, about the centre
    rot90: int = 0  # quarter turns
    flip: int | None = None  # numpy axis of the HWC image: 0 vertical, 1 horizontal
    dropout: tuple[Rect, ...] = ()


@dataclass(frozen=True)
class PairParams:
    """Every random choice of one pair's augmentation (see `draw_params`)."""

    swap: bool = False
    to_prompt: np.ndarray | None = None  # 2x3, source px -> output px; None: no warp (resize only)
    to_query: np.ndarray | None = None
    prompt: PromptParams = field(default_factory=PromptParams)
    jitter: tuple[Jitter | None, Jitter | None] = (None, None)  # prompt's, query's
    resample: tuple[Resample | None, Resample | None] = (None, None)  # the stored prompt's, query's

    def query_to_prompt(self) -> np.ndarray:
        """2x3 map from query pixels to the (warped) prompt's pixels."""
        if self.to_prompt is None or self.to_query is None:  # both are drawn, or neither
            return IDENTITY
        return _compose(self.to_prompt, cv2.invertAffineTransform(self.to_query))


def resample_sources(pair: dict, params: PairParams) -> dict:
    """The stored prompt and query with their resolution jitter (before swap and warp;
    both augmentation paths apply it here, in the loader workers)."""
    if params.resample == (None, None):
        return pair
    return {
        **pair,
        "prompt": apply_resample(pair["prompt"], params.resample[0]),
        "query": apply_resample(pair["query"], params.resample[1]),
    }


def draw_prompt_params(rng: np.random.Generator, cfg: AugmentConfig, h: int, w: int) -> PromptParams:
    """Rotation, rot90, flip, dropout of an h x w prompt: a coin per option that is on."""
    rotate = float(rng.uniform(30, 270)) if _fires(rng, cfg.prompt_rotate) else None
    rot90 = int(rng.integers(1, 4)) if _fires(rng, cfg.prompt_rot90) else 0
    flip = int(rng.integers(0, 2)) if _fires(rng, cfg.prompt_flip) else None
    dropout = draw_dropout(rng, h, w) if _fires(rng, cfg.prompt_dropout) else ()
    return PromptParams(rotate, rot90, flip, dropout)


def draw_params(rng: np.random.Generator, cfg: AugmentConfig, source_hw: tuple[int, ...], size: int) -> PairParams:
    """One pair's choices, in the order the CPU path always drew them: swap, warp (two
    affines), prompt-only options, jitter of prompt then query; then the resolution
    jitter of the stored prompt and query (drawn last, and nothing when off, so the
    streams of earlier configs are unchanged). `source_hw` is the stored pair's size:
    the warps include the resize to `size`."""
    swap = bool(rng.random() < cfg.swap)
    to_prompt = to_query = None
    if rng.random() < cfg.affine:
        resize = _resize_matrix(source_hw[0], source_hw[1], size)
        to_prompt = _compose(_random_affine(rng, size, cfg), resize)
        to_query = _compose(_random_affine(rng, size, cfg), resize)
    prompt = draw_prompt_params(rng, cfg, size, size)
    jitter = draw_jitter(rng, cfg.jitter), draw_jitter(rng, cfg.jitter)
    resample = draw_resample(rng, cfg.resample_jitter), draw_resample(rng, cfg.resample_jitter)
    return PairParams(swap, to_prompt, to_query, prompt, jitter, resample)


def apply_prompt(
    prompt: np.ndarray, mask: np.ndarray, query_to_prompt: np.ndarray, p: PromptParams
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
    if p.rotate is not None:
        prompt, mask = _rotate_prompt(prompt, mask, query_to_prompt, p.rotate)
    if p.rot90:
        prompt = np.rot90(prompt, k=p.rot90)
    if p.flip is not None:
        prompt = np.flip(prompt, axis=p.flip)
    if p.dropout:
        prompt = fill_rects(prompt, p.dropout)
    return np.ascontiguousarray(prompt), mask


def augment_prompt(
    prompt: np.ndarray, mask: np.ndarray, query_to_prompt: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`apply_prompt` with freshly drawn prompt-only choices."""
    return apply_prompt(prompt, mask, query_to_prompt, draw_prompt_params(rng, cfg, *prompt.shape[:2]))


def apply_params(pair: dict, size: int, params: PairParams) -> dict:
    """Resolution jitter, swap, warp prompt vs query+mask independently, augment the prompt
    alone, jitter colours, with OpenCV; everything at `size` x `size`."""
    pair = resample_sources(pair, params)
    prompt, query, mask = pair["prompt"], pair["query"], pair["mask"]
    if params.swap:
        prompt, query = query, prompt
    to_prompt, to_query = params.to_prompt, params.to_query
    if to_prompt is None or to_query is None:  # both are drawn, or neither
        out = resize_pair({**pair, "prompt": prompt, "query": query, "mask": mask}, size)
        prompt, query, mask = out["prompt"], out["query"], out["mask"]
    else:
        h, w = mask.shape
        # source pixels that land inside the warped prompt: dst(x) = ones(to_prompt @ x)
        visible = cv2.warpAffine(
            np.ones((size, size), np.uint8), to_prompt, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        )
        prompt = _warp(prompt, to_prompt, size, cv2.INTER_LINEAR)
        query = _warp(query, to_query, size, cv2.INTER_LINEAR)
        mask = _warp(mask * visible, to_query, size, cv2.INTER_NEAREST)
    prompt, mask = apply_prompt(prompt, mask, params.query_to_prompt(), params.prompt)
    return {
        **pair,
        "prompt": apply_jitter(prompt, params.jitter[0]),
        "query": apply_jitter(query, params.jitter[1]),
        "mask": mask,
    }


def augment_pair(pair: dict, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """Swap, warp prompt vs query+mask independently, augment the prompt alone, jitter
    colours; everything at `size` x `size` (`draw_params`, then `apply_params`)."""
    return apply_params(pair, size, draw_params(rng, cfg, pair["mask"].shape, size))
