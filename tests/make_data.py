"""Small stand-in data the tests build themselves: MVTec-layout benchmarks, real
changepair/1 tars written with webdataset, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from metauas.model.config import EncoderConfig, ModelConfig

TINY_DECODER = (16, 16, 8, 8, 8)


def tiny_model_config(**overrides) -> ModelConfig:
    """Random-weight lite0 encoder with a small decoder: fast, same code paths."""
    fields = {"encoder": EncoderConfig(weights="none"), "decoder_channels": TINY_DECODER, **overrides}
    return ModelConfig(**fields)


def make_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random image and a copy with a bright rectangle pasted in; its mask."""
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    prompt = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    query = prompt.copy()
    mask = np.zeros((size, size), np.uint8)
    if rng.random() < 0.85:
        h, w = rng.integers(size // 6, size // 3, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        query[y : y + h, x : x + w] = rng.integers(0, 255, 3, dtype=np.uint8)
        mask[y : y + h, x : x + w] = 255
    return prompt, query, mask


def write_shards(
    folder: Path, shards: int, per_shard: int, size: int = 64, seed: int = 0, prefix: str = "shard"
) -> list[Path]:
    """Write `shards` tars of `per_shard` samples following the changepair/1 schema."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(shards):
        path = folder / f"{prefix}-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                index = s * per_shard + i
                prompt, query, mask = make_pair(rng, size)
                sink.write(
                    {
                        "__key__": f"{index:08d}",
                        "prompt.png": cv2.imencode(".png", prompt[..., ::-1])[1].tobytes(),
                        "query.png": cv2.imencode(".png", query[..., ::-1])[1].tobytes(),
                        "mask.png": cv2.imencode(".png", mask)[1].tobytes(),
                        "json": json.dumps(
                            {"schema": "changepair/1", "index": index, "change": "local" if mask.any() else "none"}
                        ).encode(),
                    }
                )
        paths.append(path)
    return paths


SIZE = 64


def texture(rng: np.random.Generator, tint: tuple[int, int, int]) -> np.ndarray:
    """A smooth striped surface with mild noise: every normal image of a class alike."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = 0.5 + 0.25 * np.sin(x / 3.0) * np.cos(y / 5.0)
    img = base[..., None] * np.array(tint)[None, None] + rng.normal(0, 4, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark blob with its 0/255 mask."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = rng.integers(16, SIZE - 16, size=2)
    cv2.ellipse(mask, (int(cx), int(cy)), (9, 6), float(rng.integers(0, 180)), 0, 360, 255, -1)
    out = img.copy()
    out[mask > 0] = (30, 30, 30)
    return out, mask


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    return path


def make_mvtec(root: Path, classes: dict[str, tuple[int, int, int]], seed: int = 0) -> Path:
    """<cls>/train/good (3), test/good (2), test/blob (3) + ground_truth/blob/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    for name, tint in classes.items():
        for i in range(3):
            write(root / name / "train" / "good" / f"{i:03d}.png", texture(rng, tint))
        for i in range(2):
            write(root / name / "test" / "good" / f"{i:03d}.png", texture(rng, tint))
        for i in range(3):
            img, mask = defect(texture(rng, tint), rng)
            write(root / name / "test" / "blob" / f"{i:03d}.png", img)
            write(root / name / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask)
    return root


def make_visa_raw(root: Path, classes: dict[str, tuple[int, int, int]], seed: int = 0) -> Path:
    """VisA as downloaded: `<cls>/Data/Images/{Normal,Anomaly}/*.JPG`, masks in
    `<cls>/Data/Masks/Anomaly/*.png` labelled with small values (not 255), and
    `split_csv/1cls.csv` with the dataset's own columns and labels."""
    rng = np.random.default_rng(seed)
    rows = ["object,split,label,image,mask"]
    for name, tint in classes.items():
        data = root / name / "Data"
        for i in reversed(range(5)):  # 3 train, 2 test normals; the real CSV is not in name order
            image = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            write(root / image, texture(rng, tint))
            rows.append(f"{name},{'train' if i < 3 else 'test'},normal,{image},")
        for i in range(3):
            img, mask = defect(texture(rng, tint), rng)
            write(data / "Images" / "Anomaly" / f"{i:03d}.JPG", img)
            write(data / "Masks" / "Anomaly" / f"{i:03d}.png", (mask > 0).astype(np.uint8) * (i + 1))
            rows.append(
                f"{name},test,anomaly,{name}/Data/Images/Anomaly/{i:03d}.JPG,{name}/Data/Masks/Anomaly/{i:03d}.png"
            )
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def prepare_visa(raw: Path, save: Path) -> Path:
    """What VisA's prepare_data.py --split-type 1cls does (amazon-science/spot-diff): copy
    each image to `<save>/1cls/<cls>/<split>/{good,bad}/<name>` and each test anomaly's
    mask, non-zero set to 255, to `<cls>/ground_truth/bad/<mask name>`."""
    import csv
    import shutil

    out = save / "1cls"
    with open(raw / "split_csv" / "1cls.csv", newline="") as f:
        for obj, split, label, image, mask in list(csv.reader(f))[1:]:
            kind = "good" if label == "normal" else "bad"
            dst = out / obj / split / kind / Path(image).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw / image, dst)
            if split == "test" and kind == "bad":
                m = cv2.imread(str(raw / mask), cv2.IMREAD_GRAYSCALE)
                write(out / obj / "ground_truth" / "bad" / Path(mask).name, np.where(m != 0, 255, 0).astype(np.uint8))
    return save


def make_coco(root: Path, images: int = 20, size: tuple[int, int] = (96, 128), seed: int = 0) -> tuple[Path, Path]:
    """A tiny COCO set: `images` noisy photos with two filled discs each, one polygon and
    one RLE instance per image; returns (images folder, instances JSON)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    (root / "train2017").mkdir(parents=True, exist_ok=True)
    infos, anns = [], []
    h, w = size
    for i in range(images):
        img = (rng.integers(0, 60, (h, w, 3)) + rng.integers(0, 120)).astype(np.uint8)
        for j in range(2):
            m = np.zeros((h, w), np.uint8)
            r = int(min(h, w) * rng.uniform(0.15, 0.25))
            cy, cx = int(rng.integers(r + 2, h - r - 2)), int(rng.integers(r + 2, w - r - 2))
            cv2.circle(m, (cx, cy), r, 1, -1)
            img[m > 0] = rng.integers(120, 256, size=3)
            base = {
                "id": 10 * i + j + 1,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": float(m.sum()),
                "bbox": [cx - r, cy - r, 2 * r, 2 * r],
            }
            if j == 0:
                contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                anns.append({**base, "segmentation": [[float(v) for v in contours[0].reshape(-1)]]})
            else:
                rle = mask_utils.encode(np.asfortranarray(m))
                anns.append({**base, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        name = f"{i + 1:012d}.jpg"
        cv2.imwrite(str(root / "train2017" / name), img)
        infos.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    annotations = root / "annotations" / "instances_train2017.json"
    annotations.parent.mkdir(parents=True, exist_ok=True)
    annotations.write_text(
        json.dumps({"images": infos, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]})
    )
    return root / "train2017", annotations
