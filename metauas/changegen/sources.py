"""Where source images and their object instances come from: one interface, three
implementations (`coco`, `folder`, `builtin`).

A source is an indexable list of items; `load(k, size)` returns the item fitted to
size x size (images.fit_square) with its instance masks, or raises SkipSource with a
reason that index.json counts. `pick(rng)` draws an item index; every random choice
stays in the caller's per-sample RNG.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metauas.changegen.images import IMAGE_SUFFIXES, SkipSource, fit_mask, fit_square, read_rgb
from metauas.changegen.scenes import render_scene
from metauas.changegen.segment import object_candidates
from metauas.errors import UserError

SEGMENT_CACHE = 512


@dataclass
class SourceItem:
    image: np.ndarray  # size x size x 3 uint8
    instances: list[np.ndarray]  # size x size bool masks
    ident: dict  # what this item is, recorded in each sample's json
    skips: Counter = field(default_factory=Counter)  # instances dropped, by reason


class Source:
    """Base: a finite list of items. Subclasses define __len__ and load."""

    name = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, k: int, size: int) -> SourceItem:
        raise NotImplementedError

    def pick(self, rng: np.random.Generator) -> int:
        return int(rng.integers(len(self)))

    def prime(self, size: int) -> None:
        """Fill per-process caches (benchmarks measure the steady state); default none."""


def _keep_by_area(masks: list[np.ndarray], min_area: float, max_area: float, skips: Counter) -> list[np.ndarray]:
    kept = []
    for m in masks:
        if min_area <= m.mean() <= max_area:
            kept.append(m)
        else:
            skips["area_out_of_range"] += 1
    return kept


class FolderSource(Source):
    """Image files without annotations; instances from unsupervised segmentation."""

    name = "folder"

    def __init__(self, paths: list[Path], min_side: int, min_area: float, max_area: float):
        self.paths = paths
        self.min_side, self.min_area, self.max_area = min_side, min_area, max_area
        self._segments: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def from_dir(cls, root: Path, **kw) -> FolderSource:
        if not root.is_dir():
            raise UserError(f"--images {root} is not a folder")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise UserError(f"--images {root} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return cls(paths, **kw)

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, k: int, size: int) -> np.ndarray:
        return fit_square(read_rgb(self.paths[k], self.min_side), size)

    def prime(self, size: int) -> None:
        if len(self) <= SEGMENT_CACHE:
            for k in range(len(self)):
                try:
                    self.load(k, size)
                except SkipSource:
                    pass

    def load(self, k: int, size: int) -> SourceItem:
        image = self._image(k, size)
        # Segmentation is a pure function of the file and dominates the cost of a
        # load, so it is cached per process (bounded, oldest out first) as one
        # uint8 label map: the candidates are disjoint regions of one segmentation.
        labels = self._segments.get((k, size))
        if labels is None:
            labels = np.zeros((size, size), np.uint8)
            for j, mask in enumerate(object_candidates(image, self.min_area, self.max_area)):
                labels[mask] = j + 1
            if len(self._segments) >= SEGMENT_CACHE:
                self._segments.pop(next(iter(self._segments)))
            self._segments[(k, size)] = labels
        instances = [labels == j for j in range(1, int(labels.max()) + 1)]
        return SourceItem(image, instances, {"kind": "folder", "file": self.paths[k].name})


class CocoSource(Source):
    """COCO instances JSON + images folder, read with pycocotools."""

    name = "coco"

    SPLIT_SEED = 0  # the image-subset shuffle: fixed, so train and val never overlap whatever --seed

    def __init__(self, images: Path, annotations: Path, min_side: int, min_area: float, max_area: float,
                 max_images: int | None = None, split: str = "all", val_fraction: float = 0.05):
        if not annotations.is_file():
            raise UserError(f"--coco-annotations {annotations} does not exist")
        if not images.is_dir():
            raise UserError(f"--coco-images {images} is not a folder")
        from pycocotools.coco import COCO

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(annotations))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AssertionError) as err:
            raise UserError(f"--coco-annotations {annotations} is not a COCO instances file ({err})") from None
        self.ids = subset_ids(sorted(self.coco.getImgIds()), max_images, split, val_fraction, self.SPLIT_SEED)
        if not self.ids:
            raise UserError(f"--coco-annotations {annotations} lists no images" +
                            (f" in --coco-split {split}" if split != "all" else ""))
        self.images = images
        self.min_side, self.min_area, self.max_area = min_side, min_area, max_area

    def __len__(self) -> int:
        return len(self.ids)

    def _instance(self, ann: dict, h: int, w: int, skips: Counter) -> np.ndarray | None:
        seg = ann.get("segmentation")
        if ann.get("iscrowd", 0):
            skips["iscrowd"] += 1
            return None
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
            if not polys:
                skips["degenerate_polygon"] += 1
                return None
            ann = {**ann, "segmentation": polys}
        elif not isinstance(seg, dict):
            skips["degenerate_polygon"] += 1
            return None
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = self.coco.annToMask(ann).astype(bool)
        if mask.shape != (h, w) or not mask.any():
            skips["degenerate_polygon" if isinstance(seg, list) else "empty_mask"] += 1
            return None
        return mask

    def load(self, k: int, size: int) -> SourceItem:
        info = self.coco.imgs[self.ids[k]]
        image = read_rgb(self.images / info["file_name"], self.min_side)
        h, w = image.shape[:2]
        skips: Counter = Counter()
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[info["id"]]))
        masks = [m for m in (self._instance(a, h, w, skips) for a in anns) if m is not None]
        masks = _keep_by_area([fit_mask(m, size) for m in masks], self.min_area, self.max_area, skips)
        ident = {"kind": "coco", "image_id": info["id"], "file": info["file_name"]}
        return SourceItem(fit_square(image, size), masks, ident, skips)


def subset_ids(ids: list[int], max_images: int | None, split: str, val_fraction: float, seed: int) -> list[int]:
    """The image ids of one split, sorted: the first `max_images` of a seeded shuffle of
    `ids`, of which the last round(n * val_fraction) form `val` and the others `train`."""
    if max_images is None and split == "all":
        return ids
    chosen = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[:max_images]]
    n_val = round(len(chosen) * val_fraction)
    parts = {"all": chosen, "train": chosen[:len(chosen) - n_val], "val": chosen[len(chosen) - n_val:]}
    return sorted(parts[split])


class SceneSource(Source):
    """`count` procedural scenes; scene j of namespace `ns` is seeded by (SCENE_SEED, ns, j)."""

    name = "scenes"
    SCENE_SEED = 0x5CE4E

    def __init__(self, namespace: int, count: int, min_area: float, max_area: float):
        self.namespace, self.count = namespace, count
        self.min_area, self.max_area = min_area, max_area

    def __len__(self) -> int:
        return self.count

    def load(self, k: int, size: int) -> SourceItem:
        rng = np.random.default_rng([self.SCENE_SEED, self.namespace, k])
        image, masks, kinds = render_scene(rng, size, self.min_area)
        skips: Counter = Counter()
        masks = _keep_by_area(masks, self.min_area, self.max_area, skips)
        return SourceItem(image, masks, {"kind": "scene", "namespace": self.namespace, "scene": k}, skips)


class ConcatSource(Source):
    """Several sources as one; `pick` first draws a part by weight, then an item in it."""

    def __init__(self, name: str, parts: list[Source], weights: list[float]):
        self.name, self.parts = name, parts
        self.weights = np.asarray(weights, np.float64) / sum(weights)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, k: int) -> tuple[Source, int]:
        part = int(np.searchsorted(self.offsets, k, side="right") - 1)
        return self.parts[part], k - int(self.offsets[part])

    def load(self, k: int, size: int) -> SourceItem:
        source, j = self._locate(k)
        return source.load(j, size)

    def prime(self, size: int) -> None:
        for part in self.parts:
            part.prime(size)

    def pick(self, rng: np.random.Generator) -> int:
        part = int(rng.choice(len(self.parts), p=self.weights))
        return int(self.offsets[part]) + self.parts[part].pick(rng)
