"""The embedded `builtin` source, and the one place that turns a config into a source.

`builtin` needs no files and no network: the photographs scikit-image ships go through
the `folder` path (unsupervised object candidates), and procedural scenes add variety.
(page.png is left out: libpng warns about its colour profile on every read.)
It has two disjoint splits so a demo can train on one and test on another:

- train:   11 photos (chelsea, coffee, motorcycle_left, motorcycle_right, camera,
           hubble_deep_field, ihc, retina, moon, clock_motion, cell) and
           scenes of namespace 1;
- heldout: 3 photos (astronaut, rocket, coins) and scenes of namespace 2
           (scene seeds are (SCENE_SEED, namespace, j), so no scene is in both);
- all:     both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metauas.changegen.config import GenerateConfig
from metauas.changegen.sources import CocoSource, ConcatSource, FolderSource, SceneSource, Source

TRAIN_PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "moon.png",
    "clock_motion.png",
    "cell.png",
)
HELDOUT_PHOTOS = ("astronaut.png", "rocket.jpg", "coins.png")
SCENES = {"train": (1, 10000), "heldout": (2, 2000)}  # namespace, count
PHOTO_WEIGHT = 0.4  # share of builtin draws that are photos; the rest are scenes


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def builtin_source(split: str, min_side: int, min_area: float, max_area: float) -> Source:
    splits = ("train", "heldout") if split == "all" else (split,)
    photos = [n for s in splits for n in (TRAIN_PHOTOS if s == "train" else HELDOUT_PHOTOS)]
    root = skimage_data_dir()
    folder = FolderSource([root / n for n in photos], min_side=min_side, min_area=min_area, max_area=max_area)
    scenes = [SceneSource(*SCENES[s], min_area=min_area, max_area=max_area) for s in splits]
    parts: list[Source] = [folder, *scenes]
    weights = [PHOTO_WEIGHT] + [(1 - PHOTO_WEIGHT) / len(scenes)] * len(scenes)
    return ConcatSource(f"builtin-{split}", parts, weights)


def open_source(cfg: GenerateConfig) -> Source:
    """Build the configured source; a missing flag or file is a UserError here,
    before any work starts."""
    from metauas.errors import UserError

    bounds: dict[str, Any] = dict(min_side=cfg.min_side, min_area=cfg.min_area, max_area=cfg.max_area)
    if cfg.source == "builtin":
        return builtin_source(cfg.builtin_split, **bounds)
    if cfg.source == "folder":
        if cfg.images is None:
            raise UserError("`source` folder needs `images`, a folder of images")
        return FolderSource.from_dir(cfg.images, **bounds, max_pixels=cfg.max_pixels)
    if cfg.coco_images is None or cfg.coco_annotations is None:
        raise UserError("`source` coco needs `coco_images` (a folder) and `coco_annotations` (an instances JSON)")
    return CocoSource(
        cfg.coco_images,
        cfg.coco_annotations,
        **bounds,
        max_pixels=cfg.max_pixels,
        max_images=cfg.coco_max_images,
        split=cfg.coco_split,
        val_fraction=cfg.coco_val_fraction,
    )
