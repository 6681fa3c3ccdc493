"""The one typed description of a generation run, shared by the CLI, the Python API,
the workers and index.json.

Everything that changes the bytes of a shard lives here, so that `index.json` can
record it and a rerun can tell whether it is resuming the same dataset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from metauas.data.format import CHANGE_TYPES, SHARD_PIXELS
from metauas.data.images import MAX_PIXELS
from metauas.errors import UserError

SHARD_SIDE = math.isqrt(SHARD_PIXELS)  # the largest --size: what every shard reader decodes
GENERATOR_NAME = "metauas.changegen"
# Bump when the same config + seed would give different bytes.
GENERATOR_VERSION = "1.0.0"

DEFAULT_LOCAL_MASKS = {"perlin": 1.0}
DEFAULT_WEIGHTS = {"disappear": 0.25, "appear": 0.25, "exchange": 0.2, "local": 0.2, "none": 0.1}
SOURCES = ("builtin", "coco", "folder")
IMAGE_FORMATS = ("jpg", "png", "webp")
BUILTIN_SPLITS = ("train", "heldout", "all")
COCO_SPLITS = ("all", "train", "val")
PERLIN = {"numpy": "numpy", "noise": "pnoise2"}  # --perlin -> perlin.METHODS
# fields added after datasets were made, with the value that makes the old bytes: left out
# of the recorded config at that value, so older folders still resume with the same options
ADDED_LATER = {"perlin": "numpy", "max_pixels": MAX_PIXELS, "local_masks": DEFAULT_LOCAL_MASKS, "local_intensity": 0.5}
# the COCO subset, added later too: its three fields are left out together while no subset
# is chosen, and recorded together when one is
COCO_SUBSET = {"coco_max_images": None, "coco_split": "all", "coco_val_fraction": 0.05}


@dataclass
class GenerateConfig:
    """A generation run. `out`, `num_pairs` and the source decide the dataset; the
    fields under "how" (workers, shards, progress) never change a byte of it."""

    out: Path
    num_pairs: int
    source: str = "builtin"
    images: Path | None = None  # folder source
    coco_images: Path | None = None
    coco_annotations: Path | None = None
    # COCO image subset: the first coco_max_images of a fixed shuffle of the image ids,
    # of which the last coco_val_fraction are `val` and the rest `train` (the paper: 60k
    # images, 0.95 / 0.05); the shuffle never depends on --seed, so the splits never overlap
    coco_max_images: int | None = None
    coco_split: str = "all"  # all | train | val
    coco_val_fraction: float = 0.05
    builtin_split: str = "all"
    size: int = 256
    shard_size: int = 1000
    prefix: str = "shard"
    image_format: str = "jpg"
    jpeg_quality: int = 95
    seed: int = 0
    inpainter: str = "opencv"
    lama_model: Path | None = None
    change_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    min_side: int = 64  # source images with a shorter side are skipped as too small
    max_pixels: int = MAX_PIXELS  # larger source images (from the header) are skipped as too_large
    min_area: float = 0.01  # instance area bounds, as a fraction of the image
    max_area: float = 0.35
    max_exchange: int = 3  # exchange pastes 1..max_exchange instances
    # Perlin noise of `local` masks: numpy (vectorised, DRAEM's exact recipe, default) |
    # noise (the `noise` package's pnoise2 per pixel, ~50x slower; docs/benchmarks.md)
    perlin: str = "numpy"
    # `local` mask kinds and weights: perlin (DRAEM, the paper's) | blob | stroke | stain
    # (small and thin defects, defects.py); the fill of a small kind is an intensity change
    # with probability local_intensity, else DRAEM's
    local_masks: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOCAL_MASKS))
    local_intensity: float = 0.5
    # how (never changes the bytes)
    workers: int = 1
    shards: str | None = None  # "A:B" shard-id range
    progress: bool = True
    start_method: str | None = None  # multiprocessing start method; None = platform default

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("images", "coco_images", "coco_annotations", "lama_model"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))

    def validate(self) -> None:
        """Reject impossible settings with one clear line before any work starts."""
        checks = [
            (self.num_pairs > 0, "--num-pairs must be positive"),
            (self.source in SOURCES, f"--source must be one of {', '.join(SOURCES)}"),
            (16 <= self.size <= SHARD_SIDE, f"--size must be from 16 to {SHARD_SIDE} (what shard readers decode)"),
            (self.shard_size > 0, "--shard-size must be positive"),
            (self.image_format in IMAGE_FORMATS, f"--image-format must be one of {', '.join(IMAGE_FORMATS)}"),
            (self.builtin_split in BUILTIN_SPLITS, f"--builtin-split must be one of {', '.join(BUILTIN_SPLITS)}"),
            (self.coco_split in COCO_SPLITS, f"--coco-split must be one of {', '.join(COCO_SPLITS)}"),
            (0 < self.coco_val_fraction < 1, "--coco-val-fraction must be between 0 and 1"),
            (self.coco_max_images is None or self.coco_max_images > 0, "--coco-max-images must be positive"),
            (self.workers >= 1, "--workers must be at least 1"),
            (self.max_pixels >= 1, "--max-pixels must be positive"),
            (0 <= self.min_area < self.max_area <= 1, "area bounds need 0 <= min < max <= 1"),
            (self.max_exchange >= 1, "max_exchange must be at least 1"),
            (self.perlin in PERLIN, f"--perlin must be one of {', '.join(PERLIN)}"),
            (
                "." not in self.prefix and "/" not in self.prefix and self.prefix,
                "--prefix must be a plain name without dots",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        validate_weights(self.change_weights)
        validate_local_masks(self.local_masks)
        if not 0 <= self.local_intensity <= 1:
            raise UserError(f"--local-intensity is a probability in 0..1, got {self.local_intensity}")

    @property
    def num_shards(self) -> int:
        return -(-self.num_pairs // self.shard_size)

    def dataset_fields(self) -> dict:
        """The fields that decide the bytes of the dataset, as JSON-ready values (fields
        added later are left out at their old values: ADDED_LATER, COCO_SUBSET)."""
        skip = {"workers", "shards", "progress", "start_method", "out"}
        if all(getattr(self, name) == value for name, value in COCO_SUBSET.items()):
            skip |= set(COCO_SUBSET)
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in skip or (f.name in ADDED_LATER and value == ADDED_LATER[f.name]):
                continue
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _check_weights(weights: dict[str, float], known: tuple[str, ...], option: str, noun: str) -> None:
    unknown = set(weights) - set(known)
    if unknown:
        raise UserError(f"unknown {noun}(s) in {option}: {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise UserError(f"{option} must be non-negative with a positive sum")


def _parse_weights(text: str, option: str, pair: str) -> dict[str, float]:
    """`a=1,b=0.5` -> {"a": 1.0, "b": 0.5}, in the order written; `pair` names the left side."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise UserError(f"{option} wants {pair}=weight pairs, got {part!r}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"{option}: {value!r} is not a number") from None
    return weights


def validate_weights(weights: dict[str, float]) -> None:
    _check_weights(weights, CHANGE_TYPES, "--change-weights", "change type")


def validate_local_masks(weights: dict[str, float]) -> None:
    from metauas.changegen.defects import KINDS

    _check_weights(weights, KINDS, "--local-masks", "local mask kind")


def parse_local_masks(text: str) -> dict[str, float]:
    """`perlin=1,blob=1,stroke=1` -> dict of the named kinds (unnamed kinds are off)."""
    weights = _parse_weights(text, "--local-masks", "kind")
    validate_local_masks(weights)
    return {k: w for k, w in weights.items() if w > 0}


def parse_change_weights(text: str) -> dict[str, float]:
    """`disappear=1,appear=1,local=0.5` -> dict; types not named get weight 0."""
    weights = {name: 0.0 for name in CHANGE_TYPES} | _parse_weights(text, "--change-weights", "name")
    validate_weights(weights)
    return weights


def parse_shard_range(text: str | None, num_shards: int) -> range:
    """`A:B` (B exclusive, either side may be empty) -> range of shard ids."""
    if text is None:
        return range(num_shards)
    start, sep, stop = text.partition(":")
    try:
        a = int(start) if start else 0
        b = int(stop) if stop else num_shards
    except ValueError:
        raise UserError(f"--shards wants A:B with integers, got {text!r}") from None
    if not sep or not 0 <= a < b or b > num_shards:
        raise UserError(f"--shards {text!r} is not a non-empty range within 0:{num_shards}")
    return range(a, b)
