"""The paper's COCO image subset: a fixed shuffle, the first N images, split train / val."""

from __future__ import annotations

import json

import pytest
from changegen_helpers import read_back, run_cli

from metauas.changegen.config import GenerateConfig
from metauas.changegen.sources import subset_ids
from metauas.errors import UserError


def test_subset_is_disjoint_sized_and_independent_of_the_dataset_seed():
    ids = list(range(1000, 1100))
    train, val = (subset_ids(ids, 60, split, 0.05, seed=0) for split in ("train", "val"))
    assert (len(train), len(val)) == (57, 3) and not set(train) & set(val)
    assert set(train) | set(val) == set(subset_ids(ids, 60, "all", 0.05, seed=0)) and train == sorted(train)
    assert subset_ids(ids, None, "all", 0.05, seed=0) == ids
    assert len(subset_ids(ids, None, "val", 0.05, seed=0)) == 5 and len(subset_ids(ids, 500, "train", 0.1, 0)) == 90


def test_generate_draws_only_from_its_split(coco_set, tmp_path):
    images, annotations = coco_set
    common = [
        "generate",
        "--source",
        "coco",
        "--coco-images",
        str(images),
        "--coco-annotations",
        str(annotations),
        "--num-pairs",
        "12",
        "--size",
        "64",
        "--coco-val-fraction",
        "0.4",
        "--no-progress",
    ]
    run_cli(*common, "--coco-split", "val", "--change-weights", "disappear=1", "--out", str(tmp_path / "val"))
    run_cli(*common, "--coco-split", "train", "--change-weights", "disappear=1", "--out", str(tmp_path / "train"))
    used = {name: {s["json"]["source"]["image_id"] for s in read_back(tmp_path / name)} for name in ("val", "train")}
    assert used["val"] and used["train"] and not used["val"] & used["train"]
    assert used["val"] <= set(subset_ids([1, 2, 3, 4, 5, 99], None, "val", 0.4, 0))
    index = json.loads((tmp_path / "val" / "index.json").read_text())
    assert index["config"]["coco_split"] == "val" and index["config"]["coco_val_fraction"] == 0.4


def test_new_fields_stay_out_of_older_datasets_identity():
    fields = GenerateConfig(out="x", num_pairs=1).dataset_fields()
    assert not {"coco_split", "coco_max_images", "coco_val_fraction"} & set(fields)
    assert GenerateConfig(out="x", num_pairs=1, coco_split="train").dataset_fields()["coco_split"] == "train"
    with pytest.raises(UserError, match="`coco_val_fraction`"):
        GenerateConfig(out="x", num_pairs=1, coco_val_fraction=1.0)
