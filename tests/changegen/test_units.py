"""Small contracts: flags parsing, keys, tar determinism, sources, preview sheet."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from changegen_helpers import run_cli

from metauas.changegen.builtin import HELDOUT_PHOTOS, TRAIN_PHOTOS, builtin_source
from metauas.changegen.config import GenerateConfig, parse_change_weights, parse_shard_range
from metauas.data.format import sample_key
from metauas.data.images import fit_square
from metauas.data.shards import MTIME
from metauas.errors import UserError


def test_change_weights_parse_and_reject():
    assert parse_change_weights("disappear=2, local=0.5") == {
        "disappear": 2.0,
        "appear": 0.0,
        "exchange": 0.0,
        "local": 0.5,
        "none": 0.0,
    }
    for bad in ("disappear", "disappear=x", "melt=1", "local=-1"):
        with pytest.raises(UserError):
            parse_change_weights(bad)


def test_shard_range():
    assert parse_shard_range("2:5", 10) == range(2, 5)
    assert parse_shard_range(":3", 10) == range(0, 3) and parse_shard_range("7:", 10) == range(7, 10)
    for bad in ("5:2", "0:11", "a:b", "3"):
        with pytest.raises(UserError):
            parse_shard_range(bad, 10)


def test_keys_are_zero_padded_without_dots():
    assert sample_key(42, 240) == "000000042"
    assert sample_key(5, 10**10) == "0000000005" and "." not in sample_key(5, 10**10)


def test_fit_square_scales_the_shorter_side_and_crops_the_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # the centre 100 columns
    out = fit_square(img, 50)
    assert out.shape == (50, 50, 3) and out.min() == 255


def test_builtin_splits_are_disjoint():
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS) and len(HELDOUT_PHOTOS) >= 3
    train = builtin_source("train", 64, 0.01, 0.35)
    held = builtin_source("heldout", 64, 0.01, 0.35)
    a = train.load(len(train.parts[0]), 48)  # first scene of each split
    b = held.load(len(held.parts[0]), 48)
    assert a.ident["namespace"] != b.ident["namespace"] and not np.array_equal(a.image, b.image)
    names = {held.load(k, 48).ident["file"] for k in range(len(held.parts[0]))}
    assert names == set(HELDOUT_PHOTOS)


def test_tar_members_are_reproducible_and_preview_draws_a_sheet(tmp_path):
    out = tmp_path / "d"
    run_cli("generate", "--num-pairs", "6", "--size", "48", "--out", str(out), "--no-progress")
    with tarfile.open(out / "shard-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name.split(".", 1)[1] for m in members[:4]] == ["prompt.jpg", "query.jpg", "mask.png", "json"]
    assert {m.mtime for m in members} == {MTIME} and {m.uid for m in members} == {0}
    sheet = tmp_path / "sheet.png"
    run_cli("preview", str(out / "shard-000000.tar"), "--out", str(sheet), "--n", "5")
    import cv2

    img = cv2.imread(str(sheet))
    assert img.shape == (3 * (160 + 20), 2 * 3 * 160, 3)


def test_config_records_only_what_changes_the_bytes():
    a = GenerateConfig(out="x", num_pairs=5, workers=1).dataset_fields()
    b = GenerateConfig(out="y", num_pairs=5, workers=4, shards="0:1").dataset_fields()
    assert a == b and "workers" not in a


def test_coco_source_reads_polygon_and_rle_and_counts_what_it_skips(coco_set):
    from metauas.changegen.sources import CocoSource
    from metauas.data.images import SkipSource

    images, annotations = coco_set
    source = CocoSource(images, annotations, min_side=64, min_area=0.01, max_area=0.35)
    first = source.load(0, 64)  # polygon + RLE disc, a crowd instance, a two-point polygon
    assert len(first.instances) == 2 and all(m.shape == (64, 64) and m.any() for m in first.instances)
    assert first.skips == {"iscrowd": 1, "degenerate_polygon": 1}
    assert first.ident == {"kind": "coco", "image_id": 1, "file": "000.jpg"}
    with pytest.raises(SkipSource) as skipped:
        source.load(len(source) - 1, 64)  # the listed image that is not an image
    assert skipped.value.reason == "unreadable"


def test_bench_commands_print_a_row_per_cell():
    proc = run_cli("bench", "generate", "--sizes", "32", "--workers", "1", "--pairs", "4")
    lines = proc.stdout.strip().splitlines()
    assert lines[1].startswith("| size | workers | floor | disappear |")
    row = lines[-1].strip("| ").split(" | ")
    assert row[:2] == ["32", "1"] and len(row) == 10 and all(float(v) > 0 for v in row[2:])
    perlin = run_cli("bench", "perlin", "--sizes", "32", "--repeats", "2").stdout
    assert {line.split(" | ")[0].strip("| ") for line in perlin.splitlines()[2:]} == {"numpy", "pnoise2", "coarse"}


def test_grey_16_bit_and_rgba_images_load_as_rgb(tmp_path):
    import cv2

    from metauas.changegen.sources import FolderSource

    grey16 = (np.arange(96 * 96, dtype=np.uint32).reshape(96, 96) * 7 % 65536).astype(np.uint16)
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[:48, :, 3] = 255  # top half opaque, bottom half transparent (-> white)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    source = FolderSource.from_dir(tmp_path, min_side=64, min_area=0.01, max_area=0.35)
    images = {source.paths[k].name: source.load(k, 64).image for k in range(len(source))}
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images.values())
    assert images["grey16.png"].max() > 200  # scaled to 8 bits, not truncated
    assert tuple(images["rgba.png"][5, 5]) == (200, 0, 0) and tuple(images["rgba.png"][60, 5]) == (255, 255, 255)
