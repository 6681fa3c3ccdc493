"""Benchmark readers: MVTec AD, VisA, meta.json (AnomalyCLIP/VAND) and a plain folder.

Every reader yields the same thing per class: the normal training images (prompt
candidates) and the test samples (path, label, mask path). A reader only lists files;
problems it can see without decoding (an anomalous image without a mask) are collected
in `Benchmark.problems` and the sample keeps `mask=None`, so the evaluation leaves it out
of pixel metrics and says so, never scoring it against an empty mask. Wrong-size masks
are found when the mask is read (`load_mask`).
"""

from __future__ import annotations

import csv
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from metauas.data.images import MAX_PIXELS, SkipSource, decode_bounded, file_limit, list_images, read_file
from metauas.errors import UserError
from metauas.outputs import inside, plain_name

BenchmarkFormat = Literal["mvtec", "visa", "meta", "folder"]
FORMATS: tuple[BenchmarkFormat, ...] = typing.get_args(BenchmarkFormat)


@dataclass(frozen=True)
class Sample:
    """One test image: label 1 = anomalous; `mask` None when it has (or needs) none."""

    path: Path
    label: int
    mask: Path | None
    defect: str = "good"


@dataclass
class ClassData:
    name: str
    train: list[Path]
    test: list[Sample]
    problems: list[str] = field(default_factory=list)


@dataclass
class Benchmark:
    classes: list[ClassData]

    @property
    def problems(self) -> list[str]:
        return [p for c in self.classes for p in c.problems]


def _checked_mask(path: Path | None, image: Path, problems: list[str]) -> Path | None:
    if path is not None and path.is_file():
        return path
    problems.append(f"anomalous image without a mask (left out of pixel metrics): {image}")
    return None


def _mvtec_mask(folder: Path, defect: str, image: Path) -> Path:
    """The ground truth of a test image: MVTec names it `<stem>_mask.png`; VisA's
    prepare_data.py output and GoodsAD name it `<stem>.png` (same folders)."""
    masks = folder / "ground_truth" / defect
    mvtec = masks / f"{image.stem}_mask.png"
    return mvtec if mvtec.is_file() or not (masks / f"{image.stem}.png").is_file() else masks / f"{image.stem}.png"


def _mvtec_class(folder: Path) -> ClassData:
    test: list[Sample] = []
    problems: list[str] = []
    for defect_dir in sorted(p for p in (folder / "test").iterdir() if p.is_dir()):
        defect = defect_dir.name
        for image in list_images(defect_dir):
            if defect == "good":
                test.append(Sample(image, 0, None, defect))
                continue
            test.append(Sample(image, 1, _checked_mask(_mvtec_mask(folder, defect, image), image, problems), defect))
    return ClassData(folder.name, list_images(folder / "train" / "good"), test, problems)


def read_mvtec(root: Path) -> list[ClassData]:
    """`<cls>/train/good`, `<cls>/test/<defect>`, `<cls>/ground_truth/<defect>/<stem>_mask.png`
    (or `<stem>.png`: VisA as prepare_data.py writes it, GoodsAD); ROOT may be the dataset
    folder or one class folder."""
    if (root / "test").is_dir():
        return [_mvtec_class(root)]
    return [_mvtec_class(p) for p in sorted(root.iterdir()) if (p / "test").is_dir()]


VISA_SPLIT = Path("split_csv") / "1cls.csv"
VISA_LABELS = {"normal": 0, "good": 0, "0": 0, "anomaly": 1, "abnormal": 1, "bad": 1, "1": 1}


def _visa_table(table: Path, root: Path) -> list[ClassData]:
    """VisA's split CSV (columns object, split, label, image, mask; labels normal|anomaly;
    paths relative to the VisA folder), as the dataset and its repository ship it."""
    classes: dict[str, ClassData] = {}
    with open(table, newline="", errors="surrogateescape") as f:  # file names that are not UTF-8 stay bytes
        reader = csv.DictReader(f)
        missing = {"object", "split", "label", "image"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(
                f"{table} lacks the column(s) {', '.join(sorted(missing))} "
                "(VisA's split file has object, split, label, image, mask)"
            )
        for row in reader:
            name, label_text = plain_name(row["object"].strip(), f"{table}: class"), row["label"].strip().lower()
            if label_text not in VISA_LABELS:
                raise UserError(f"{table}: unknown label {row['label']!r} (expected normal or anomaly)")
            data = classes.setdefault(name, ClassData(name, [], []))
            image, label = inside(root, row["image"], f"{table}: image"), VISA_LABELS[label_text]
            if row["split"].strip() == "train":
                if not label:
                    data.train.append(image)
                continue
            mask_name = (row.get("mask") or "").strip()
            mask_path = inside(root, mask_name, f"{table}: mask") if mask_name else None
            mask = _checked_mask(mask_path, image, data.problems) if label else None
            data.test.append(Sample(image, label, mask, "anomaly" if label else "good"))
    # the CSV is shuffled; prepared folders list bad/ then good/, each by name: in that order
    # too, seeds pick the same prompts and queries meet in the same batches (CPU kernels round
    # a batch's maps apart by its composition: P-AUROC moved by 2e-5 on a stand-in otherwise)
    for data in classes.values():
        data.train.sort(key=lambda p: (p.name, str(p)))
        data.test.sort(key=lambda s: (s.label == 0, s.path.name, str(s.path)))
    return list(classes.values())


def read_visa(root: Path) -> list[ClassData]:
    """VisA in either layout, detected: the raw download (ROOT/split_csv/1cls.csv, or the
    CSV itself, whose paths start at the folder above split_csv/), or the MVTec-style
    folder VisA's prepare_data.py writes (ROOT = VisA_pytorch/1cls or VisA_pytorch:
    `<cls>/train/good`, `<cls>/test/{good,bad}`, `<cls>/ground_truth/bad/<stem>.png`)."""
    if root.is_file():
        return _visa_table(root, root.parent.parent if root.parent.name == "split_csv" else root.parent)
    if (root / VISA_SPLIT).is_file():
        return _visa_table(root / VISA_SPLIT, root)
    for prepared in (root, root / "1cls"):
        if prepared.is_dir() and any((p / "test").is_dir() for p in prepared.iterdir()):
            return read_mvtec(prepared)
    raise UserError(
        f"{root} is not VisA: no split file {VISA_SPLIT} (the raw download) and no class "
        "folders with test/ (prepare_data.py's VisA_pytorch/1cls)"
    )


def read_meta(root: Path) -> list[ClassData]:
    """AnomalyCLIP/VAND `meta.json`: {"train"|"test": {cls: [{img_path, mask_path, cls_name,
    specie_name, anomaly}]}} with paths relative to ROOT."""
    path = root / "meta.json" if root.is_dir() else root
    root = path.parent
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nested beyond reason
        raise UserError(f"cannot read meta.json {path}: {err}") from None
    classes: dict[str, ClassData] = {}
    for name, items in meta.get("test", {}).items():
        data = classes.setdefault(name, ClassData(plain_name(name, f"{path}: class"), [], []))
        for item in items:
            image, label = inside(root, item["img_path"], f"{path}: img_path"), int(item["anomaly"])
            mask = None
            if label:
                listed = inside(root, item["mask_path"], f"{path}: mask_path") if item.get("mask_path") else None
                mask = _checked_mask(listed, image, data.problems)
            defect = plain_name(item.get("specie_name") or "good", f"{path}: specie_name")
            data.test.append(Sample(image, label, mask, defect))
    for name, items in meta.get("train", {}).items():
        data = classes.setdefault(name, ClassData(plain_name(name, f"{path}: class"), [], []))
        data.train.extend(inside(root, i["img_path"], f"{path}: img_path") for i in items if not int(i["anomaly"]))
    return list(classes.values())


def _folder_class(folder: Path) -> ClassData:
    problems: list[str] = []
    masks = folder / "masks"
    test = [Sample(p, 0, None) for p in list_images(folder / "normal")]
    for image in list_images(folder / "anomaly"):
        if not masks.is_dir():
            test.append(Sample(image, 1, None, "anomaly"))
            continue
        found = [m for m in (masks / f"{image.stem}.png", masks / f"{image.stem}_mask.png") if m.is_file()]
        test.append(Sample(image, 1, _checked_mask(found[0] if found else None, image, problems), "anomaly"))
    if not masks.is_dir() and (folder / "anomaly").is_dir():
        problems.append(f"{folder}: no masks/ folder, pixel metrics not computed for this class")
    return ClassData(folder.name, list_images(folder / "train"), test, problems)


def read_folder(root: Path) -> list[ClassData]:
    """ROOT[/<cls>]/{train (normal prompts), normal, anomaly, masks (<stem>[_mask].png)}."""
    if (root / "anomaly").is_dir() or (root / "normal").is_dir():
        return [_folder_class(root)]
    folders = [p for p in sorted(root.iterdir()) if (p / "anomaly").is_dir() or (p / "normal").is_dir()]
    return [_folder_class(p) for p in folders]


def is_benchmark_folder(path: str | Path) -> bool:
    """An MVTec-layout folder (a class with test/, or a root of such classes) rather than
    shards: `--val` takes either."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.tar")):
        return False
    return (folder / "test").is_dir() or any((c / "test").is_dir() for c in folder.iterdir() if c.is_dir())


def read_benchmark(root: str | Path, fmt: str, classes: list[str] | None = None) -> Benchmark:
    """List a benchmark's classes, keeping `classes` (all when None) in the order found."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    readers = {"mvtec": read_mvtec, "visa": read_visa, "meta": read_meta, "folder": read_folder}
    if fmt not in readers:
        raise UserError(f"unknown format {fmt!r}: use {'|'.join(FORMATS)}")
    try:
        found = readers[fmt](root)
    except OSError as err:
        raise UserError(f"cannot read {root} as `fmt` {fmt}: {err.strerror or err}") from None
    except (KeyError, TypeError, ValueError, AttributeError, csv.Error) as err:  # a listing file of another shape
        raise UserError(
            f"{root} is not laid out as `fmt` {fmt} ({type(err).__name__}: {str(err)[:120]}); see docs/evaluation.md"
        ) from None
    if classes:
        unknown = sorted(set(classes) - {c.name for c in found})
        if unknown:
            raise UserError(
                f"classes not in {root}: {', '.join(unknown)} (found: {', '.join(c.name for c in found) or 'none'})"
            )
        found = [c for c in found if c.name in classes]
    found = [c for c in found if c.test]
    if not found:
        raise UserError(f"no test images found in {root} as `fmt` {fmt}")
    return Benchmark(found)


def load_mask(path: Path, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask as uint8 (0..255), or None when it cannot be read or its size differs from
    the image's (the caller reports that).

    A mask whose largest value is below 128 labels defects with small integers (VisA's raw
    masks do; its prepare_data.py sets every non-zero pixel to 255): its non-zero pixels
    become 255, so both protocols' thresholds see the defect. 0/255 masks are unchanged."""
    try:  # the project's bounded reader: read through Python, pixels counted from the header
        mask = decode_bounded(read_file(path, file_limit(MAX_PIXELS)), str(path), MAX_PIXELS, cv2.IMREAD_GRAYSCALE)
    except SkipSource:
        return None
    if mask.shape[:2] != tuple(image_shape[:2]):
        return None
    if 0 < mask.max() < 128:
        mask = np.where(mask > 0, 255, 0).astype(np.uint8)
    return mask
