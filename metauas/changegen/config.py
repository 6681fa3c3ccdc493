"""The one typed description of a generation run, shared by the CLI, the Python API,
the workers and index.json.

Everything that changes the bytes of a shard lives here, so that `index.json` can
record it and a rerun can tell whether it is resuming the same dataset.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from metauas.configs import Panel, option
from metauas.data.format import CHANGE_TYPES, SHARD_PIXELS
from metauas.data.images import MAX_PIXELS
from metauas.errors import UserError

SHARD_SIDE = math.isqrt(SHARD_PIXELS)  # the largest `size`: what every shard reader decodes
GENERATOR_NAME = "metauas.changegen"
# Bump when the same config + seed would give different bytes.
GENERATOR_VERSION = "1.0.0"

DEFAULT_LOCAL_MASKS = {"perlin": 1.0}
DEFAULT_WEIGHTS = {"disappear": 0.25, "appear": 0.25, "exchange": 0.2, "local": 0.2, "none": 0.1}
# each choice is a Literal alias (for type checkers and the CLI's choices) and its tuple
Source = Literal["builtin", "coco", "folder"]
SOURCES: tuple[Source, ...] = typing.get_args(Source)
ImageFormat = Literal["jpg", "png", "webp"]  # prompt and query encoding (masks are png)
IMAGE_FORMATS: tuple[ImageFormat, ...] = typing.get_args(ImageFormat)
BuiltinSplit = Literal["train", "heldout", "all"]
BUILTIN_SPLITS: tuple[BuiltinSplit, ...] = typing.get_args(BuiltinSplit)
CocoSplit = Literal["all", "train", "val"]
COCO_SPLITS: tuple[CocoSplit, ...] = typing.get_args(CocoSplit)
Inpainter = Literal["opencv", "opencv-ns", "patchmatch", "lama"]  # inpaint.py's backends
INPAINTERS: tuple[Inpainter, ...] = typing.get_args(Inpainter)
PerlinName = Literal["numpy", "noise"]
PERLIN: dict[PerlinName, str] = {"numpy": "numpy", "noise": "pnoise2"}  # --perlin -> perlin.METHODS
StartMethod = Literal["spawn", "fork", "forkserver"]  # multiprocessing's
# fields added after datasets were made, with the value that makes the old bytes: left out
# of the recorded config at that value, so older folders still resume with the same options
ADDED_LATER = {
    "perlin": "numpy",
    "max_pixels": MAX_PIXELS,
    "local_masks": DEFAULT_LOCAL_MASKS,
    "local_intensity": 0.5,
    "local_shift": 0.0,
    "instance_prompts": 0.0,
}
# the COCO subset, added later too: its three fields are left out together while no subset
# is chosen, and recorded together when one is
COCO_SUBSET = {"coco_max_images": None, "coco_split": "all", "coco_val_fraction": 0.05}


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
    _check_weights(weights, CHANGE_TYPES, "`change_weights`", "change type")


def validate_local_masks(weights: dict[str, float]) -> None:
    from metauas.changegen.defects import KINDS

    _check_weights(weights, KINDS, "`local_masks`", "local mask kind")


def parse_local_masks(text: str, name: str = "`local_masks`") -> dict[str, float]:
    """`perlin=1,blob=1,stroke=1` -> dict of the named kinds (unnamed kinds are off)."""
    weights = _parse_weights(text, name, "kind")
    validate_local_masks(weights)
    return {k: w for k, w in weights.items() if w > 0}


def parse_change_weights(text: str, name: str = "`change_weights`") -> dict[str, float]:
    """`disappear=1,appear=1,local=0.5` -> dict; types not named get weight 0."""
    weights = dict.fromkeys(CHANGE_TYPES, 0.0) | _parse_weights(text, name, "name")
    validate_weights(weights)
    return weights


def weights_text(weights: dict[str, float]) -> str:
    """{"a": 1.0, "b": 0.5} -> "a=1, b=0.5", as the weight parsers read it."""
    return ", ".join(f"{k}={v:g}" for k, v in weights.items())


@dataclass(frozen=True)
class GenerateConfig:
    """A generation run. `out`, `num_pairs` and the source decide the dataset; the
    fields under "how" (workers, shards, progress) never change a byte of it.

    Frozen and checked when made, like every config: an impossible setting fails with
    one clear line before any work starts, and no caller has to remember to check."""

    out: Path = option(
        help="Output folder for the shards and index.json (created if missing).", panel=Panel.OUTPUT, required="always"
    )
    num_pairs: int = option(
        help="Number of change pairs in the dataset.", panel=Panel.SYNTHESIS, required="unless-config"
    )
    source: Source = option(
        "builtin",
        "Where images come from: builtin (embedded, offline) | coco (instances JSON) | folder (any images).",
        Panel.DATA,
    )
    images: Path | None = option(  # folder source
        None, "Folder of images (with --source folder); searched recursively.", Panel.DATA
    )
    coco_images: Path | None = option(None, "COCO images folder (with --source coco).", Panel.DATA)
    coco_annotations: Path | None = option(None, "COCO instances JSON (with --source coco).", Panel.DATA)
    # COCO image subset: the first coco_max_images of a fixed shuffle of the image ids,
    # of which the last coco_val_fraction are `val` and the rest `train` (the paper: 60k
    # images, 0.95 / 0.05); the shuffle never depends on --seed, so the splits never overlap
    coco_max_images: int | None = option(
        None, "Use only this many COCO images (a fixed shuffle of the ids; the paper: 60000).", Panel.DATA
    )
    coco_split: CocoSplit = option("all", "Which part of those images: all | train | val.", Panel.DATA)
    coco_val_fraction: float = option(
        0.05, "Share of the images that form --coco-split val (the paper: 0.05).", Panel.DATA
    )
    builtin_split: BuiltinSplit = option(
        "all",
        "Builtin photos and scenes: train | heldout | all (disjoint train/heldout; see docs/usage.md).",
        Panel.DATA,
    )
    size: int = option(256, "Output side in px: shorter side scaled to SIZE, centre square cropped.", Panel.OUTPUT)
    shard_size: int = option(1000, "Samples per shard.", Panel.OUTPUT)
    prefix: str = option("shard", "Shard names are PREFIX-NNNNNN.tar.", Panel.OUTPUT)
    image_format: ImageFormat = option("jpg", "Prompt/query encoding (masks are always png).", Panel.OUTPUT)
    jpeg_quality: int = option(95, "Quality of jpg/webp encoding (1-100).", Panel.OUTPUT, names=("--quality",))
    seed: int = option(0, "Dataset seed; sample i uses an RNG seeded by (seed, i).", Panel.SYNTHESIS)
    inpainter: Inpainter = option(
        "opencv",
        "Inpainting backend: opencv (Telea) | opencv-ns | patchmatch (optional package) | lama (--lama-model).",
        Panel.SYNTHESIS,
    )
    lama_model: Path | None = option(
        None, "big-lama TorchScript file for --inpainter lama (or set LAMA_MODEL).", Panel.SYNTHESIS
    )
    change_weights: dict[str, float] = option(
        help="Change types drawn, with weights, e.g. disappear=1, appear=1, exchange=1, local=1, none=0.5; "
        "unnamed types get 0.",
        panel=Panel.SYNTHESIS,
        factory=lambda: dict(DEFAULT_WEIGHTS),
        kind=str,
        parse=parse_change_weights,
        text=weights_text,
    )
    min_side: int = option(  # source images with a shorter side are skipped as too small
        64, "Skip source images whose shorter side is below this (counted as too_small).", Panel.DATA
    )
    max_pixels: int = option(  # larger source images (from the header) are skipped as too_large
        MAX_PIXELS,
        "Skip source images with more pixels than this, read from the file's header before decoding (counted as "
        "too_large).",
        Panel.DATA,
    )
    min_area: float = option(  # instance area bounds, as a fraction of the image
        0.01, "Smallest instance kept, as a fraction of the output image.", Panel.SYNTHESIS
    )
    max_area: float = option(0.35, "Largest instance kept, as a fraction of the output image.", Panel.SYNTHESIS)
    max_exchange: int = option(3, "exchange pastes 1..N instances.", Panel.SYNTHESIS)
    # Perlin noise of `local` masks: numpy (vectorised, DRAEM's exact recipe, default) |
    # noise (the `noise` package's pnoise2 per pixel, ~50x slower; docs/benchmarks.md)
    perlin: PerlinName = option(
        "numpy",
        "Perlin noise of local masks: numpy (DRAEM's recipe, vectorised) | noise (the noise package's pnoise2, "
        "~50x slower).",
        Panel.SYNTHESIS,
    )
    # `local` mask kinds and weights: perlin (DRAEM, the paper's) | blob | stroke | stain
    # (small and thin defects, defects.py); the fill of a small kind is an intensity change
    # with probability local_intensity, else DRAEM's
    local_masks: dict[str, float] = option(
        help="Mask kinds of the local change with weights, e.g. perlin=1, blob=1, stroke=1, stain=0.5: perlin "
        "(DRAEM's Perlin regions, the paper's) | blob (one pit or blowhole, 3-12% of the side across) | stroke (a "
        "scratch or crack polyline, 0.8-3.5% of the side wide) | stain (fine Perlin noise inside one small "
        "ellipse).",
        panel=Panel.SYNTHESIS,
        factory=lambda: dict(DEFAULT_LOCAL_MASKS),
        kind=str,
        parse=parse_local_masks,
        text=weights_text,
    )
    local_intensity: float = option(
        0.5,
        "Probability that a blob/stroke/stain is a darker or brighter spot instead of DRAEM's fill from another "
        "image or texture.",
        Panel.SYNTHESIS,
    )
    # with probability local_shift a blob/stroke/stain moves the image's own content a few
    # pixels inside the mask instead (defects.shift_fill): a structural change
    local_shift: float = option(
        0.0,
        "Probability that a blob/stroke/stain is a structural change instead: the image's own content shifted a "
        "few pixels inside the mask (a notch, spur, gap or bridge where it crosses an edge).",
        Panel.SYNTHESIS,
    )
    # procedural scenes only: the prompt of a local/none pair drawn as another instance of
    # the scene's kind (Source.instance_images), so the model meets prompt/query pairs that
    # differ in layout, as one normal image of an unseen object does
    instance_prompts: float = option(
        0.0,
        "Probability that a local or none pair of a procedural scene takes its prompt from another instance of "
        "the scene's kind (same materials, another layout) instead of the query's own image before the change; "
        "the mask still marks only the change. Photos and COCO items keep their own image.",
        Panel.SYNTHESIS,
    )
    # how (never changes the bytes)
    workers: int = option(1, "Worker processes; never changes the bytes written.", Panel.DEVICE)
    shards: str | None = option(  # "A:B" shard-id range
        None, "Make only shard ids A:B (B exclusive); combine with RANK/WORLD_SIZE.", Panel.DEVICE
    )
    progress: bool = option(True, "Show a progress bar on stderr.", Panel.OUTPUT, names=("--progress/--no-progress",))
    start_method: StartMethod | None = option(  # None = the platform's default
        None, "multiprocessing start method (default: spawn).", Panel.DEVICE
    )

    def __post_init__(self) -> None:
        for name in ("out", "images", "coco_images", "coco_annotations", "lama_model"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))  # frozen: the one way to normalise a field
        self._check()

    def _check(self) -> None:
        """Reject impossible settings with one clear line."""
        checks = [
            (self.num_pairs > 0, "`num_pairs` must be positive"),
            (self.source in SOURCES, f"`source` must be one of {', '.join(SOURCES)}"),
            (16 <= self.size <= SHARD_SIDE, f"`size` must be from 16 to {SHARD_SIDE} (what shard readers decode)"),
            (self.shard_size > 0, "`shard_size` must be positive"),
            (self.image_format in IMAGE_FORMATS, f"`image_format` must be one of {', '.join(IMAGE_FORMATS)}"),
            (self.builtin_split in BUILTIN_SPLITS, f"`builtin_split` must be one of {', '.join(BUILTIN_SPLITS)}"),
            (self.coco_split in COCO_SPLITS, f"`coco_split` must be one of {', '.join(COCO_SPLITS)}"),
            (0 < self.coco_val_fraction < 1, "`coco_val_fraction` must be between 0 and 1"),
            (self.coco_max_images is None or self.coco_max_images > 0, "`coco_max_images` must be positive"),
            (self.workers >= 1, "`workers` must be at least 1"),
            (self.max_pixels >= 1, "`max_pixels` must be positive"),
            (0 <= self.min_area < self.max_area <= 1, "area bounds need 0 <= min < max <= 1"),
            (self.max_exchange >= 1, "max_exchange must be at least 1"),
            (self.perlin in PERLIN, f"`perlin` must be one of {', '.join(PERLIN)}"),
            (
                "." not in self.prefix and "/" not in self.prefix and self.prefix,
                "`prefix` must be a plain name without dots",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        validate_weights(self.change_weights)
        validate_local_masks(self.local_masks)
        for name in ("local_intensity", "local_shift", "instance_prompts"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"`{name}` is a probability in 0..1, got {getattr(self, name)}")

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


def parse_shard_range(text: str | None, num_shards: int) -> range:
    """`A:B` (B exclusive, either side may be empty) -> range of shard ids."""
    if text is None:
        return range(num_shards)
    start, sep, stop = text.partition(":")
    try:
        a = int(start) if start else 0
        b = int(stop) if stop else num_shards
    except ValueError:
        raise UserError(f"`shards` wants A:B with integers, got {text!r}") from None
    if not sep or not 0 <= a < b or b > num_shards:
        raise UserError(f"`shards` {text!r} is not a non-empty range within 0:{num_shards}")
    return range(a, b)
