"""Paths built from data stay under their root: class names and defect types from a
meta.json or VisA's csv, image paths they list, COCO `file_name`s. A name that would
climb out is one line, before any work, and nothing is written outside `--out`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fault_helpers import cli, one_line_error, run_main

ITEM = {"img_path": "a/test/x.png", "mask_path": "a/gt/x.png", "anomaly": 1, "specie_name": "scratch"}


def _meta(root, test: dict, train: dict | None = None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps({"test": test, "train": train or {}}))
    return root


def _files(root) -> set:
    return {p for p in root.rglob("*")}


def test_a_class_name_that_climbs_out_is_one_line_and_writes_nothing(tmp_path):
    data = _meta(tmp_path / "bench", {"../../../../ESC": [ITEM]})
    out = tmp_path / "deep" / "er" / "out"
    before = _files(tmp_path)
    proc = cli("evaluate", "--method", "lookup", "--format", "meta", "--data", data, "--out", out, "--no-progress")
    one_line_error(proc, "'../../../../ESC'", "cannot be a file name")
    assert _files(tmp_path) - before <= {tmp_path / "deep", tmp_path / "deep" / "er", out}


@pytest.mark.parametrize(
    "test, words",
    [
        ({"/tmp/absolute": [ITEM]}, ["class '/tmp/absolute'"]),
        ({"a\nb": [ITEM]}, ["class 'a\\nb'"]),
        ({"..": [ITEM]}, ["class '..'"]),
        ({"a": [{**ITEM, "img_path": "../../etc/passwd"}]}, ["img_path '../../etc/passwd' leads outside"]),
        ({"a": [{**ITEM, "img_path": "/etc/passwd"}]}, ["img_path '/etc/passwd' leads outside"]),
        ({"a": [{**ITEM, "mask_path": "a/../../m.png"}]}, ["mask_path 'a/../../m.png' leads outside"]),
        ({"a": [{**ITEM, "specie_name": "../../x"}]}, ["specie_name '../../x'"]),
    ],
)
def test_meta_json_names_that_leave_the_root(tmp_path, capsys, test, words):
    data = _meta(tmp_path / "bench", test)
    proc = run_main(
        capsys, "evaluate", "--method", "lookup", "--format", "meta", "--data", data, "--out", tmp_path / "o"
    )
    one_line_error(proc, *words)


@pytest.mark.parametrize(
    "row, words",
    [
        ("../../x,test,anomaly,a.png,m.png", ["class '../../x'"]),
        ("a,test,anomaly,../a.png,m.png", ["image '../a.png' leads outside"]),
        ("a,test,anomaly,a.png,/etc/m.png", ["mask '/etc/m.png' leads outside"]),
    ],
)
def test_visa_csv_names_that_leave_the_root(tmp_path, capsys, row, words):
    table = tmp_path / "visa" / "split_csv" / "1cls.csv"
    table.parent.mkdir(parents=True)
    table.write_text(f"object,split,label,image,mask\n{row}\n")
    proc = run_main(
        capsys,
        "evaluate",
        "--method",
        "lookup",
        "--format",
        "visa",
        "--data",
        tmp_path / "visa",
        "--out",
        tmp_path / "o",
    )
    one_line_error(proc, *words)


@pytest.mark.parametrize("name", ["../outside.png", "/tmp/outside.png", "a/../../outside.png"])
def test_a_coco_file_name_outside_the_images_folder_is_one_line(tmp_path, capsys, name):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(tmp_path / "outside.png"), np.full((64, 64, 3), 80, np.uint8))
    coco = {"images": [{"id": 7, "file_name": name, "height": 64, "width": 64}], "annotations": [], "categories": []}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    args = ["--source", "coco", "--coco-images", images, "--coco-annotations", tmp_path / "ann.json"]
    proc = run_main(capsys, "generate", *args, "--num-pairs", "2", "--size", "32", "--out", tmp_path / "d")
    one_line_error(proc, f"image 7: file_name '{name}' leads outside")
