"""Tiny data made by the tests themselves: an image folder and a COCO set with
polygon and RLE instances, a crowd instance and a degenerate polygon."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils


def _photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A noisy background with two filled discs of random colours, and their masks."""
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8) + np.uint8(rng.integers(0, 120))
    masks = []
    for _ in range(2):
        m = np.zeros((h, w), np.uint8)
        r = int(min(h, w) * rng.uniform(0.12, 0.22))
        cy, cx = int(rng.integers(r + 2, h - r - 2)), int(rng.integers(r + 2, w - r - 2))
        cv2.circle(m, (cx, cy), r, 1, -1)
        img[m > 0] = rng.integers(120, 256, size=3)
        masks.append(m.astype(bool))
    return img, masks


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Six small photos-like images in nested folders, plus a corrupt file and a tiny one."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for i in range(6):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        img, _ = _photo(rng, 96 + 8 * i, 128)
        cv2.imwrite(str(sub / f"img{i}.png"), img)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    cv2.imwrite(str(root / "tiny.png"), np.zeros((20, 20, 3), np.uint8))
    return root


def _polygon(mask: np.ndarray) -> list[float]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [float(v) for v in max(contours, key=cv2.contourArea).reshape(-1)]


@pytest.fixture(scope="session")
def coco_set(tmp_path_factory) -> tuple[Path, Path]:
    """Five images; per image one polygon and one RLE instance; image 0 also has a crowd
    instance and a degenerate (two-point) polygon; one listed image is corrupt."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(2)
    images, anns = [], []
    for i in range(5):
        img, (m1, m2) = _photo(rng, 112, 128)
        name = f"{i:03d}.jpg"
        cv2.imwrite(str(root / "images" / name), img)
        images.append({"id": i + 1, "file_name": name, "height": 112, "width": 128})
        rle = mask_utils.encode(np.asfortranarray(m2.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        base = {"image_id": i + 1, "category_id": 1, "iscrowd": 0}
        anns.append(
            {**base, "id": 10 * i + 1, "segmentation": [_polygon(m1)], "area": float(m1.sum()), "bbox": [0, 0, 1, 1]}
        )
        anns.append({**base, "id": 10 * i + 2, "segmentation": rle, "area": float(m2.sum()), "bbox": [0, 0, 1, 1]})
        if i == 0:
            anns.append({**base, "id": 3, "iscrowd": 1, "segmentation": rle, "area": 1.0, "bbox": [0, 0, 1, 1]})
            anns.append({**base, "id": 4, "segmentation": [[5.0, 5.0, 9.0, 9.0]], "area": 0.0, "bbox": [0, 0, 1, 1]})
    (root / "images" / "broken.jpg").write_bytes(b"not an image")
    images.append({"id": 99, "file_name": "broken.jpg", "height": 112, "width": 128})
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}))
    return root / "images", ann_file
