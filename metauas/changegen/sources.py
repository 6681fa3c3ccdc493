"""Where source images and their object instances come from: one interface, three
implementations (`coco`, `folder`, `builtin`).

A source is an indexable list of items; `load(k, size)` returns the item fitted to
size x size (images.fit_square) with its instance masks, or raises SkipSource with a
reason that index.json counts. `pick(rng)` draws an item index; every random choice
stays in the caller's per-sample RNG.
"""

from __future__ import annotations

import contextlib
import errno
import io
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metauas.changegen.scenes import render_instance, render_scene, scene_style
from metauas.changegen.segment import object_candidates
from metauas.data.images import IMAGE_SUFFIXES, MAX_PIXELS, SkipSource, fit_mask, fit_square, read_rgb
from metauas.errors import UserError
from metauas.outputs import inside

SEGMENT_CACHE = 512


@dataclass
class SourceItem:
    image: np.ndarray  # size x size x 3 uint8
    instances: list[np.ndarray]  # size x size bool masks
    ident: dict  # what this item is, recorded in each sample's json
    skips: Counter = field(default_factory=Counter)  # instances dropped, by reason


class Source:
    """Base: a finite list of items. Subclasses define __len__ and load.

    `left_out` counts, by reason, the files a source passed over once while listing
    (not per draw): index.json records them as `source_skips` and generate prints them."""

    name = "source"
    left_out: Counter = Counter()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, k: int, size: int) -> SourceItem:
        raise NotImplementedError

    def pick(self, rng: np.random.Generator) -> int:
        return int(rng.integers(len(self)))

    def prime(self, size: int) -> None:
        """Fill per-process caches (benchmarks measure the steady state); default none."""

    def instance_images(
        self, item: SourceItem, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Two other instances of `item`'s kind (query side, prompt side), or None where the
        source knows no instances (photos, COCO: one image is one instance)."""
        return None


def _keep_by_area(masks: list[np.ndarray], min_area: float, max_area: float, skips: Counter) -> list[np.ndarray]:
    kept = []
    for m in masks:
        if min_area <= m.mean() <= max_area:
            kept.append(m)
        else:
            skips["area_out_of_range"] += 1
    return kept


def walk_images(root: Path) -> tuple[list[Path], Counter]:
    """Image files under `root` (sorted), following linked folders once each, and what
    was left out by reason: `not_an_image` (another suffix), `broken_link`,
    `symlink_loop` (a link to itself, or to a folder already walked), `unreadable`."""
    left_out: Counter[str] = Counter()
    found, seen, stack = [], set(), [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                left_out["symlink_loop"] += 1
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(folder.iterdir())
        except OSError:
            left_out["unreadable"] += 1
            continue
        for p in entries:
            try:
                mode = p.stat().st_mode
            except OSError as err:
                left_out[
                    "symlink_loop" if err.errno == errno.ELOOP else "broken_link" if p.is_symlink() else "unreadable"
                ] += 1
                continue
            if stat.S_ISDIR(mode):
                stack.append(p)
            elif stat.S_ISREG(mode) and p.suffix.lower() in IMAGE_SUFFIXES:
                found.append(p)
            else:
                left_out["not_an_image"] += 1
    return sorted(found), left_out


class FolderSource(Source):
    """Image files without annotations; instances from unsupervised segmentation."""

    name = "folder"

    def __init__(
        self,
        paths: list[Path],
        min_side: int,
        min_area: float,
        max_area: float,
        max_pixels: int = MAX_PIXELS,
        left_out: Counter | None = None,
    ):
        self.paths = paths
        self.min_side, self.min_area, self.max_area, self.max_pixels = min_side, min_area, max_area, max_pixels
        self.left_out = left_out or Counter()
        self._segments: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def from_dir(cls, root: Path, **kw) -> FolderSource:
        if not root.is_dir():
            raise UserError(f"`images` {root} is not a folder")
        paths, left_out = walk_images(root)
        if not paths:
            raise UserError(
                f"`images` {root} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                + (f"; left out: {dict(left_out)}" if left_out else "")
            )
        return cls(paths, left_out=left_out, **kw)

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, k: int, size: int) -> np.ndarray:
        return fit_square(read_rgb(self.paths[k], self.min_side, self.max_pixels), size)

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


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _image_entry_ok(info) -> bool:
    return (
        isinstance(info, dict)
        and isinstance(info.get("id"), int)
        and not isinstance(info["id"], bool)
        and isinstance(info.get("file_name"), str)
        and bool(info["file_name"])
        and _whole(info.get("height"))
        and _whole(info.get("width"))
    )


def rle_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), or
    None when the string is malformed (cut inside a number, or a number over 64 bits):
    pycocotools decodes without bounds checks, so a hostile string must not reach it."""
    counts: list[int] = []
    data, p = text.encode("latin-1", "replace"), 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data) or k > 12:
                return None
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts


def rle_problem(seg: dict, h: int, w: int) -> str | None:
    """Why an RLE segmentation cannot be decoded safely for an h x w image, or None."""
    if seg.get("size") != [h, w]:
        return "size_mismatch"
    counts = seg.get("counts")
    if isinstance(counts, str):
        counts = rle_counts(counts)
    elif not (isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
        counts = None
    if counts is None or min(counts, default=0) < 0 or sum(counts) != h * w:
        return "bad_annotation"
    return None


class CocoSource(Source):
    """COCO instances JSON + images folder, read with pycocotools.

    The file is checked when opened (every image entry needs an integer id, a file name,
    and its height and width), so a malformed file is one error before any work; an
    image whose file is not the size its entry states is skipped as `size_mismatch`
    (its polygons would not fit it), and an annotation that cannot be decoded as
    `bad_annotation`."""

    name = "coco"

    SPLIT_SEED = 0  # the image-subset shuffle: fixed, so train and val never overlap whatever --seed

    def __init__(
        self,
        images: Path,
        annotations: Path,
        min_side: int,
        min_area: float,
        max_area: float,
        max_pixels: int = MAX_PIXELS,
        max_images: int | None = None,
        split: str = "all",
        val_fraction: float = 0.05,
    ):
        if not annotations.is_file():
            raise UserError(f"`coco_annotations` {annotations} does not exist")
        if not images.is_dir():
            raise UserError(f"`coco_images` {images} is not a folder")
        from pycocotools.coco import COCO

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(annotations))
        except OSError as err:
            raise UserError(f"cannot read `coco_annotations` {annotations} ({err.strerror or err})") from None
        except (ValueError, KeyError, TypeError, AssertionError, AttributeError, IndexError, RecursionError) as err:
            raise UserError(
                f"`coco_annotations` {annotations} is not a COCO instances file "
                f"({type(err).__name__}: {str(err)[:100]})"
            ) from None
        for info in self.coco.imgs.values():
            if not _image_entry_ok(info):
                raise UserError(
                    f"`coco_annotations` {annotations}: image entry {str(info)[:120]} needs an integer "
                    "id, a file_name and its height and width in pixels"
                )
            inside(images, info["file_name"], f"`coco_annotations` {annotations}: image {info['id']}: file_name")
        self.ids = subset_ids(sorted(self.coco.getImgIds()), max_images, split, val_fraction, self.SPLIT_SEED)
        if not self.ids:
            raise UserError(
                f"`coco_annotations` {annotations} lists no images"
                + (f" in `coco_split` {split}" if split != "all" else "")
            )
        self.images = images
        self.min_side, self.min_area, self.max_area, self.max_pixels = min_side, min_area, max_area, max_pixels

    def __len__(self) -> int:
        return len(self.ids)

    def _instance(self, ann: dict, h: int, w: int, skips: Counter) -> np.ndarray | None:
        if not isinstance(ann, dict):
            skips["bad_annotation"] += 1
            return None
        seg = ann.get("segmentation")
        if ann.get("iscrowd", 0):
            skips["iscrowd"] += 1
            return None
        if isinstance(seg, list):
            polys = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            if not polys:
                skips["degenerate_polygon"] += 1
                return None
            # pycocotools rasterises with C ints and allocates by the outline's length: a
            # vertex at 1e8 costs it 10 GB, so vertices stay within a side of the image
            side = max(h, w)
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and -side <= v <= 2 * side
                for poly in polys
                for v in poly
            ):
                skips["bad_annotation"] += 1
                return None
            ann = {**ann, "segmentation": polys}
        elif not isinstance(seg, dict) or (problem := rle_problem(seg, h, w)):
            skips["bad_annotation" if not isinstance(seg, dict) else problem] += 1
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
        image = read_rgb(inside(self.images, info["file_name"], "file_name"), self.min_side, self.max_pixels)
        h, w = image.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            raise SkipSource(
                "size_mismatch",
                f"{info['file_name']}: the annotations say {info['width']} x {info['height']}, the file is {w} x {h}",
            )
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
    parts = {"all": chosen, "train": chosen[: len(chosen) - n_val], "val": chosen[len(chosen) - n_val :]}
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

    def instance_images(
        self, item: SourceItem, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Two layouts of scene k's style; the style is seeded by the scene alone, the
        layouts by the sample's RNG, so every pair of one scene is a new pair of parts."""
        ident = item.ident
        if ident.get("kind") != "scene" or ident.get("namespace") != self.namespace:
            return None
        style = scene_style(np.random.default_rng([self.SCENE_SEED, self.namespace, ident["scene"], 1]), size)
        return render_instance(style, rng, size), render_instance(style, rng, size)


class ConcatSource(Source):
    """Several sources as one; `pick` first draws a part by weight, then an item in it."""

    def __init__(self, name: str, parts: list[Source], weights: list[float]):
        self.name, self.parts = name, parts
        self.weights = np.asarray(weights, np.float64) / sum(weights)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def left_out(self) -> Counter:  # type: ignore[override]  # the parts' sum, where Source has an attribute
        return sum((p.left_out for p in self.parts), Counter())

    def _locate(self, k: int) -> tuple[Source, int]:
        part = int(np.searchsorted(self.offsets, k, side="right") - 1)
        return self.parts[part], k - int(self.offsets[part])

    def load(self, k: int, size: int) -> SourceItem:
        source, j = self._locate(k)
        return source.load(j, size)

    def instance_images(
        self, item: SourceItem, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        for part in self.parts:
            found = part.instance_images(item, rng, size)
            if found is not None:
                return found
        return None

    def prime(self, size: int) -> None:
        for part in self.parts:
            part.prime(size)

    def pick(self, rng: np.random.Generator) -> int:
        part = int(rng.choice(len(self.parts), p=self.weights))
        return int(self.offsets[part]) + self.parts[part].pick(rng)
