"""The five change types. Each takes the sample's RNG and a source item and returns a
Pair, or None to ask for a redraw.

Changes that need inpainting are generators: they `yield` an InpaintRequest and get the
filled image back (the others are wrapped as generators that yield nothing), so
pairs.py can batch the requests of many samples into one call (LaMa on a GPU)
without the change code knowing. Every change writes the query as the
prompt outside its mask, so "outside the mask nothing changed" holds by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import cv2
import numpy as np

from metauas.changegen.augment import augment3
from metauas.changegen.defects import KINDS, MASKS, intensity_fill
from metauas.changegen.perlin import perlin_mask
from metauas.changegen.sources import SourceItem
from metauas.changegen.textures import random_texture

MAX_DISAPPEAR = 3  # instances removed at once
MAX_LOCAL_NOISE_DRAWS = 10


@dataclass
class Pair:
    prompt: np.ndarray
    query: np.ndarray
    mask: np.ndarray  # bool
    change: str
    params: dict = field(default_factory=dict)


@dataclass
class InpaintRequest:
    image: np.ndarray
    hole: np.ndarray


@dataclass
class Context:
    """What a change may use besides its RNG: donors for exchange/local, and knobs."""

    draw_item: Callable[[np.random.Generator, bool], SourceItem]  # (rng, need_instances)
    max_exchange: int
    perlin: str = "numpy"  # Perlin implementation of `local` masks (perlin.METHODS)
    # `local` mask kinds and weights (defects.KINDS); {"perlin": 1} is DRAEM's, the paper's
    local_masks: dict[str, float] = field(default_factory=lambda: {"perlin": 1.0})
    local_intensity: float = 0.5  # probability that a small (non-perlin) mask is an intensity change


Synth = Generator[InpaintRequest, np.ndarray, Pair | None]


def _dilation(size: int, rng: np.random.Generator) -> int:
    """A few pixels, as CYWS/LaMa practice: 1.5%..3% of the side, at least 2."""
    return max(2, int(round(size * rng.uniform(0.015, 0.03))))


def disappear(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Synth:
    size = item.image.shape[0]
    count = int(rng.integers(1, min(MAX_DISAPPEAR, len(item.instances)) + 1))
    chosen = sorted(int(c) for c in rng.choice(len(item.instances), size=count, replace=False))
    hole = np.logical_or.reduce([item.instances[c] for c in chosen])
    d = _dilation(size, rng)
    hole = cv2.dilate(hole.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1))) > 0
    filled = yield InpaintRequest(item.image, hole)
    query = np.where(hole[..., None], filled, item.image)
    return Pair(item.image, query, hole, "disappear", {"instances": chosen, "dilate_px": d})


def appear(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Synth:
    """A disappear pair swapped: the object is in the query, not in the prompt."""
    pair = yield from disappear(ctx, rng, item)
    if pair is None:
        return None
    return Pair(pair.query, pair.prompt, pair.mask, "appear", pair.params)


def _cut_instance(donor: SourceItem, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One donor instance cropped to its box, scaled, maybe flipped, with an alpha that
    is feathered inwards (so it is zero outside the instance)."""
    j = int(rng.integers(len(donor.instances)))
    ys, xs = np.nonzero(donor.instances[j])
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb = donor.image[y0:y1, x0:x1]
    mask: np.ndarray = donor.instances[j][y0:y1, x0:x1].astype(np.float32)
    scale = float(rng.uniform(0.5, 1.5))
    scale = min(scale, 0.9 * size / max(rgb.shape[:2]))
    new = (max(2, round(rgb.shape[1] * scale)), max(2, round(rgb.shape[0] * scale)))
    rgb = cv2.resize(rgb, new, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, new, interpolation=cv2.INTER_LINEAR) > 0.5
    flip = bool(rng.random() < 0.5)
    if flip:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    feather = float(rng.uniform(0.5, 2.0))
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather) * mask
    return (
        rgb,
        alpha,
        {"donor": donor.ident, "instance": j, "scale": round(scale, 4), "flip": flip, "feather": round(feather, 3)},
    )


def exchange(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Pair:
    """Paste 1..max_exchange instances cut from other images at random places."""
    size = item.image.shape[0]
    query = item.image.copy()
    mask = np.zeros((size, size), bool)
    pasted = []
    for _ in range(int(rng.integers(1, ctx.max_exchange + 1))):
        rgb, alpha, params = _cut_instance(ctx.draw_item(rng, True), rng, size)
        h, w = alpha.shape
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        a, region = alpha[..., None], query[y : y + h, x : x + w]
        # where alpha is 0 this reproduces the region exactly, so only masked pixels change
        region[...] = (region * (1 - a) + rgb * a).round().astype(np.uint8)
        mask[y : y + h, x : x + w] |= alpha > 0
        pasted.append({**params, "at": [y, x]})
    return Pair(item.image, query, mask, "exchange", {"pasted": pasted})


def _local_kind(ctx: Context, rng: np.random.Generator) -> str:
    """The mask kind of a `local` change; one kind alone draws nothing from the RNG (so the
    default, DRAEM's Perlin masks only, makes the same bytes as before kinds existed)."""
    kinds = [k for k in KINDS if ctx.local_masks.get(k, 0.0) > 0]
    if len(kinds) == 1:
        return kinds[0]
    w = np.array([ctx.local_masks[k] for k in kinds], np.float64)
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


def local(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Pair | None:
    """DRAEM: Perlin mask, filled from another image or a texture after 3 augmenters,
    blended as I(1-m) + (1-b) m A + b I m with b ~ U[0, 0.8).

    Other mask kinds (`ctx.local_masks`, see defects.py) are small and thin defects:
    filled the same way, or with probability `ctx.local_intensity` as a darker or
    brighter spot."""
    size = item.image.shape[0]
    kind = _local_kind(ctx, rng)
    if kind != "perlin":
        return _small_local(ctx, rng, item, kind)
    for _ in range(MAX_LOCAL_NOISE_DRAWS):
        mask, noise_params = perlin_mask(rng, size, size, ctx.perlin)
        if mask.any():
            break
    else:
        return None
    return _draem_fill(ctx, rng, item, mask, {"perlin": noise_params})


def _small_local(ctx: Context, rng: np.random.Generator, item: SourceItem, kind: str) -> Pair | None:
    size = item.image.shape[0]
    for _ in range(MAX_LOCAL_NOISE_DRAWS):
        mask, mask_params = MASKS[kind](rng, size)
        if mask.any():
            break
    else:
        return None
    if rng.random() < ctx.local_intensity:
        query, fill = intensity_fill(item.image, mask, rng)
        return Pair(item.image, query, mask, "local", {"mask": mask_params, "fill": fill})
    return _draem_fill(ctx, rng, item, mask, {"mask": mask_params})


def _draem_fill(ctx: Context, rng: np.random.Generator, item: SourceItem, mask: np.ndarray, mask_params: dict) -> Pair:
    size = item.image.shape[0]
    from_texture = bool(rng.random() < 0.5)
    if from_texture:
        fill, fill_src = random_texture(rng, size), {"kind": "texture"}
    else:
        donor = ctx.draw_item(rng, False)
        fill, fill_src = donor.image, donor.ident
    fill, augs = augment3(fill, rng)
    beta = float(rng.uniform(0, 0.8))
    blended = cv2.addWeighted(fill, 1 - beta, item.image, beta, 0.0)
    query = item.image.copy()
    np.copyto(query, blended, where=mask[..., None])
    params = {**mask_params, "fill": fill_src, "augmenters": augs, "beta": round(beta, 4)}
    return Pair(item.image, query, mask, "local", params)


def none(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Pair:
    """Identical content and an empty mask: teaches the model silence."""
    size = item.image.shape[0]
    return Pair(item.image, item.image.copy(), np.zeros((size, size), bool), "none", {})


def _without_inpainting(change: Callable[[Context, np.random.Generator, SourceItem], Pair | None]):
    """Adapt a change that needs no inpainting to the generator protocol of SYNTHS."""

    def synth(ctx: Context, rng: np.random.Generator, item: SourceItem) -> Synth:
        yield from ()
        return change(ctx, rng, item)

    synth.__name__ = change.__name__
    return synth


SYNTHS: dict[str, Callable[[Context, np.random.Generator, SourceItem], Synth]] = {
    "disappear": disappear,
    "appear": appear,
    "exchange": _without_inpainting(exchange),
    "local": _without_inpainting(local),
    "none": _without_inpainting(none),
}
NEEDS_INSTANCES = {"disappear", "appear"}


def visible(pair: Pair, min_mean_diff: float = 10.0, min_pixels: int = 16) -> bool:
    """A change must be seen: at least `min_pixels` masked pixels whose mean largest
    per-channel difference is `min_mean_diff` grey levels or more."""
    if pair.change == "none":
        return True
    mask8 = pair.mask.astype(np.uint8)
    if cv2.countNonZero(mask8) < min_pixels:
        return False
    diff = cv2.absdiff(pair.prompt, pair.query)
    largest = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    return cv2.mean(largest, mask=mask8)[0] >= min_mean_diff
