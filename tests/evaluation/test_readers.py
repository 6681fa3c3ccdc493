"""Benchmark readers: MVTec AD, VisA, meta.json and plain folders, with mask problems."""

from __future__ import annotations

import json

import pytest
from make_data import make_mvtec, texture, write

from metauas.errors import UserError
from metauas.evaluation.readers import read_benchmark


def test_mvtec_reader(mvtec_root):
    bench = read_benchmark(mvtec_root, "mvtec")
    assert [c.name for c in bench.classes] == ["plate", "tile"]
    tile = bench.classes[1]
    assert len(tile.train) == 3 and [s.label for s in tile.test] == [1, 1, 1, 0, 0]
    assert all(s.mask and s.mask.name == f"{s.path.stem}_mask.png" for s in tile.test if s.label)
    assert not bench.problems
    one = read_benchmark(mvtec_root / "tile", "mvtec")  # a class folder as root
    assert [c.name for c in one.classes] == ["tile"]


def test_visa_reader(tmp_path, mvtec_root):
    rows = ["object,split,label,image,mask"]
    for split, label, image, mask in [
        ("train", "normal", "tile/train/good/000.png", ""),
        ("test", "normal", "tile/test/good/000.png", ""),
        ("test", "anomaly", "tile/test/blob/000.png", "tile/ground_truth/blob/000_mask.png"),
        ("test", "anomaly", "tile/test/blob/001.png", ""),
    ]:
        rows.append(f"tile,{split},{label},{image},{mask}")
    (mvtec_root / "split_csv").mkdir(exist_ok=True)
    (mvtec_root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    bench = read_benchmark(mvtec_root, "visa")
    [tile] = bench.classes
    assert len(tile.train) == 1 and [s.label for s in tile.test] == [0, 1, 1]
    assert tile.test[2].mask is None and len(bench.problems) == 1 and "001.png" in bench.problems[0]


def test_meta_json_reader(tmp_path, mvtec_root):
    def item(path, anomaly, mask=""):
        return {"img_path": path, "mask_path": mask, "cls_name": "tile", "specie_name": "blob" if anomaly else "good",
                "anomaly": anomaly}

    meta = {"train": {"tile": [item("tile/train/good/000.png", 0), item("tile/train/good/001.png", 0)]},
            "test": {"tile": [item("tile/test/good/000.png", 0),
                              item("tile/test/blob/000.png", 1, "tile/ground_truth/blob/000_mask.png"),
                              item("tile/test/blob/002.png", 1, "tile/ground_truth/blob/missing.png")]}}
    (mvtec_root / "meta.json").write_text(json.dumps(meta))
    bench = read_benchmark(mvtec_root, "meta")
    [tile] = bench.classes
    assert len(tile.train) == 2 and [s.defect for s in tile.test] == ["good", "blob", "blob"]
    assert tile.test[1].mask is not None and tile.test[2].mask is None and len(bench.problems) == 1


def test_folder_reader(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "part"
    for i in range(2):
        write(root / "train" / f"n{i}.png", texture(rng, (100, 100, 100)))
        write(root / "normal" / f"q{i}.png", texture(rng, (100, 100, 100)))
        write(root / "anomaly" / f"a{i}.jpg", texture(rng, (100, 100, 100)))
    write(root / "masks" / "a0_mask.png", np.zeros((64, 64), np.uint8))
    bench = read_benchmark(root, "folder")
    [part] = bench.classes
    assert part.name == "part" and len(part.train) == 2 and len(part.test) == 4
    assert [s.mask is not None for s in part.test if s.label] == [True, False]
    assert len(bench.problems) == 1


def test_reader_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_benchmark(tmp_path / "nothing", "mvtec")
    with pytest.raises(UserError, match="unknown format"):
        read_benchmark(tmp_path, "coco")
    with pytest.raises(UserError, match="no test images"):
        read_benchmark(tmp_path, "mvtec")
    with pytest.raises(UserError, match="split file not found"):
        read_benchmark(tmp_path, "visa")
    root = make_mvtec(tmp_path / "m", {"a": (1, 2, 3)})
    with pytest.raises(UserError, match="classes not in"):
        read_benchmark(root, "mvtec", ["b"])
