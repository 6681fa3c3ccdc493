"""The Python API (`metauas.load`, `Segmenter`): inputs of every kind, prompt choice,
cached prompts, and thresholds fitted on normal images."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

import metauas
from metauas.cli import main
from metauas.errors import UserError


def test_three_lines_from_import_to_a_heatmap(checkpoint, mvtec_root):
    tile = mvtec_root / "tile"
    model = metauas.load(checkpoint, device="cpu")
    result = model.segment(str(tile / "test/blob/000.png"), prompt=str(tile / "train/good/000.png"))
    assert result.map.shape == (64, 64) and result.map.dtype == np.float32
    assert result.score == pytest.approx(float(result.map.max())) and 0 <= result.score <= 1
    assert result.mask is None and result.anomalous is None  # no threshold yet


def test_paths_pil_images_and_arrays_give_the_same_map(checkpoint, mvtec_root):
    tile = mvtec_root / "tile"
    query = tile / "test/blob/001.png"
    model = metauas.load(checkpoint, device="cpu").set_prompts(tile / "train/good/000.png")
    rgb = cv2.cvtColor(cv2.imread(str(query)), cv2.COLOR_BGR2RGB)
    by_path = model.segment(query).map
    for same in (Image.open(query), rgb, rgb.astype(np.float32) / 255):
        assert np.abs(model.segment(same).map - by_path).max() < 1e-5
    batch = model.segment([query, rgb])
    assert len(batch) == 2 and np.abs(batch[1].map - by_path).max() < 1e-5
    wide = model.segment(np.zeros((40, 90, 3), np.uint8))  # a non-square query keeps its own size
    assert wide.map.shape == (40, 90)
    with pytest.raises(UserError, match="H x W"):
        model.segment(np.zeros((4, 4, 7), np.uint8))


def test_each_query_takes_its_closest_prompt_or_all_of_them(checkpoint, mvtec_root):
    tile, plate = mvtec_root / "tile", mvtec_root / "plate"
    prompts = [tile / "train/good/000.png", plate / "train/good/000.png", tile / "train/good/001.png"]
    model = metauas.load(checkpoint, device="cpu").set_prompts(*prompts)
    results = model.segment([plate / "train/good/000.png", tile / "train/good/001.png"])
    assert [r.prompts for r in results] == [(1,), (2,)]  # a planted copy of a prompt finds it
    model.set_prompts(*prompts, use_all=True)
    assert model.segment(tile / "test/blob/000.png").prompts == (0, 1, 2)


def test_a_fitted_threshold_separates_defects_from_normals(mvtec_root):
    tile = mvtec_root / "tile"
    model = metauas.load(method="lookup", device="cpu", size=64)
    model.set_prompts(*sorted((tile / "train/good").glob("*.png")))
    t = model.fit_threshold()  # leave-one-out over the three prompts
    assert 0 < t < 1
    defects = model.segment(sorted((tile / "test/blob").glob("*.png")))
    assert all(r.anomalous for r in defects) and all(r.threshold == t for r in defects)
    gt = cv2.imread(str(tile / "ground_truth/blob/000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert (defects[0].mask & gt).sum() > 0.9 * gt.sum()  # the defect is inside the mask
    assert model.fit_threshold(normals=sorted((tile / "test/good").glob("*.png"))) > 0
    with pytest.raises(UserError, match="needs normal images"):
        model.set_prompts(tile / "train/good/000.png").fit_threshold()


def test_predict_threshold_writes_masks_and_a_decisions_table(mvtec_root, tmp_path, capsys):
    tile = mvtec_root / "tile"
    out = tmp_path / "decide"
    args = [
        "predict",
        "--method",
        "lookup",
        "--prompt-dir",
        str(tile / "train/good"),
        "--size",
        "64",
        "--query",
        str(tile / "test/blob"),
        "--out",
        str(out),
        "--threshold",
        "auto",
        "--normals",
        str(tile / "test/good"),
    ]
    assert main(args) == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == [r["query"] for r in records] and len(rows) == 3
    for row, record in zip(rows, records):
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_GRAYSCALE)
        score_map = cv2.imread(str(out / record["map"]), cv2.IMREAD_UNCHANGED) / 65535
        assert set(np.unique(mask)) <= {0, 255} and mask.shape == (64, 64)
        assert record["anomalous"] == (record["score"] > record["threshold"]) and row["anomalous"] == str(
            record["anomalous"]
        )
        assert ((score_map > record["threshold"] + 1e-4) <= (mask > 0)).all()
    assert main(args[:-2] + ["--threshold", "1.5"]) == 2
    assert "--threshold takes auto or a number in [0, 1]" in capsys.readouterr().err
    fixed = [a if a != "auto" else "0.25" for a in args[:-2]]
    assert (
        main(fixed + ["--normals", str(tile)]) == 2 and "--normals is for --threshold auto" in capsys.readouterr().err
    )
