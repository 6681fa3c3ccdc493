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
    # the prepared folder's order whatever the CSV's: anomalies (bad/) first, each kind by name
    assert len(tile.train) == 1 and [(s.label, s.path.name) for s in tile.test] == [
        (1, "000.png"),
        (1, "001.png"),
        (0, "000.png"),
    ]
    assert tile.test[1].mask is None and len(bench.problems) == 1 and "001.png" in bench.problems[0]


def test_meta_json_reader(tmp_path, mvtec_root):
    def item(path, anomaly, mask=""):
        return {
            "img_path": path,
            "mask_path": mask,
            "cls_name": "tile",
            "specie_name": "blob" if anomaly else "good",
            "anomaly": anomaly,
        }

    meta = {
        "train": {"tile": [item("tile/train/good/000.png", 0), item("tile/train/good/001.png", 0)]},
        "test": {
            "tile": [
                item("tile/test/good/000.png", 0),
                item("tile/test/blob/000.png", 1, "tile/ground_truth/blob/000_mask.png"),
                item("tile/test/blob/002.png", 1, "tile/ground_truth/blob/missing.png"),
            ]
        },
    }
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
    with pytest.raises(UserError, match="is not VisA"):
        read_benchmark(tmp_path, "visa")
    root = make_mvtec(tmp_path / "m", {"a": (1, 2, 3)})
    with pytest.raises(UserError, match="classes not in"):
        read_benchmark(root, "mvtec", ["b"])


def test_visa_raw_and_prepared_layouts_read_alike(tmp_path):
    """The raw download (split CSV, small-valued masks) and prepare_data.py's MVTec-style
    output list the same images with the same labels and the same masks."""
    import numpy as np
    from make_data import make_visa_raw, prepare_visa

    from metauas.evaluation.readers import load_mask

    raw = make_visa_raw(tmp_path / "VisA", {"candle": (200, 180, 90), "pcb1": (60, 140, 70)})
    prepared = prepare_visa(raw, tmp_path / "VisA_pytorch")
    views = {
        "raw": read_benchmark(raw, "visa"),
        "csv": read_benchmark(raw / "split_csv" / "1cls.csv", "visa"),
        "prepared": read_benchmark(prepared / "1cls", "visa"),
        "prepared-root": read_benchmark(prepared, "visa"),
        "as-mvtec": read_benchmark(prepared / "1cls", "mvtec"),
    }
    for name, bench in views.items():
        assert not bench.problems, name
        assert sorted(c.name for c in bench.classes) == ["candle", "pcb1"], name
        for c in bench.classes:
            assert sorted(p.name for p in c.train) == ["0000.JPG", "0001.JPG", "0002.JPG"], name
            assert {(s.path.name, s.label) for s in c.test} == {
                ("000.JPG", 1),
                ("001.JPG", 1),
                ("002.JPG", 1),
                ("0003.JPG", 0),
                ("0004.JPG", 0),
            }, name
    masks = {
        name: {
            s.path.name: load_mask(s.mask, (64, 64))
            for c in bench.classes
            if c.name == "pcb1"
            for s in c.test
            if s.label
        }
        for name, bench in views.items()
    }
    for name, found in masks.items():
        for stem, mask in found.items():
            assert mask is not None and set(np.unique(mask)) == {0, 255}, (name, stem)
            np.testing.assert_array_equal(mask, masks["raw"][stem])


def test_goods_layout_reads_as_mvtec_with_plain_mask_names(tmp_path):
    """GoodsAD (as the authors' test.json lists it): <cls>/test/<defect>/<stem>.jpg with
    <cls>/ground_truth/<defect>/<stem>.png."""
    import numpy as np

    root = tmp_path / "GoodsAD"
    rng = np.random.default_rng(0)
    write(root / "cigarette_box" / "train" / "good" / "000_000.jpg", texture(rng, (90, 90, 200)))
    write(root / "cigarette_box" / "test" / "good" / "000_001.jpg", texture(rng, (90, 90, 200)))
    write(root / "cigarette_box" / "test" / "opened" / "014_006.jpg", texture(rng, (90, 90, 200)))
    write(root / "cigarette_box" / "ground_truth" / "opened" / "014_006.png", np.full((64, 64), 255, np.uint8))
    [box] = read_benchmark(root, "mvtec").classes
    assert [(s.label, s.mask.name if s.mask else None) for s in box.test] == [(0, None), (1, "014_006.png")]


def test_visa_errors_name_both_layouts(tmp_path):
    with pytest.raises(UserError, match="split_csv/1cls.csv.*prepare_data"):
        read_benchmark(tmp_path, "visa")
    (tmp_path / "bad.csv").write_text("object,split,label,image,mask\nx,test,broken,x.png,\n")
    with pytest.raises(UserError, match="unknown label 'broken'"):
        read_benchmark(tmp_path / "bad.csv", "visa")
