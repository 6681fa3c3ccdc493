"""End to end through the CLI: builtin, coco and folder sources, determinism across
worker counts, read-back with plain webdataset, and no torch for OpenCV generation."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
from changegen_helpers import REPO, read_back, run_cli

from metauas.changegen.config import CHANGE_TYPES

SMALL = ["--size", "64", "--shard-size", "60", "--no-progress"]


def shas(out) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_builtin_240_pairs_twice_identical_and_readable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli(
        "generate",
        "--source",
        "builtin",
        "--num-pairs",
        "240",
        "--workers",
        "2",
        "--seed",
        "7",
        "--out",
        str(a),
        *SMALL,
    )
    run_cli(
        "generate",
        "--source",
        "builtin",
        "--num-pairs",
        "240",
        "--workers",
        "1",
        "--seed",
        "7",
        "--out",
        str(b),
        *SMALL,
    )
    assert shas(a) == shas(b) and len(shas(a)) == 4
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
    index = json.loads((a / "index.json").read_text())
    assert index["complete"] and index["pairs_written"] == 240 and index["seed"] == 7
    assert [s["sha256"] for s in index["shards"]] == list(shas(a).values())
    samples = read_back(a)
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(240)]
    seen = set()
    for s in samples:
        meta = s["json"]
        assert meta["schema"] == "changepair/1" and meta["index"] == int(s["__key__"]) and meta["seed"] == 7
        assert s["prompt.jpg"].shape == s["query.jpg"].shape == (64, 64, 3) and s["mask.png"].shape[:2] == (64, 64)
        assert (s["mask.png"].max() > 0) == (meta["change"] != "none")
        seen.add(meta["change"])
    assert seen == set(CHANGE_TYPES)
    assert sum(index["changes"].values()) == 240


def test_another_seed_gives_another_dataset(tmp_path):
    run_cli("generate", "--num-pairs", "20", "--seed", "1", "--out", str(tmp_path / "s1"), *SMALL)
    run_cli("generate", "--num-pairs", "20", "--seed", "2", "--out", str(tmp_path / "s2"), *SMALL)
    assert shas(tmp_path / "s1") != shas(tmp_path / "s2")


def test_coco_source(tmp_path, coco_set):
    images, annotations = coco_set
    out = tmp_path / "coco"
    run_cli(
        "generate",
        "--source",
        "coco",
        "--coco-images",
        str(images),
        "--coco-annotations",
        str(annotations),
        "--num-pairs",
        "40",
        "--workers",
        "2",
        "--out",
        str(out),
        "--image-format",
        "png",
        *SMALL,
    )
    index = json.loads((out / "index.json").read_text())
    samples = read_back(out)
    assert len(samples) == 40 and {s["json"]["source"]["kind"] for s in samples} == {"coco"}
    for s in samples:
        m = s["mask.png"][..., 0] > 0
        assert np.array_equal(s["prompt.png"][~m], s["query.png"][~m])
    # image 1 (crowd + degenerate polygon) and the broken image are drawn among 6 images
    assert index["skips"]["iscrowd"] > 0 and index["skips"]["degenerate_polygon"] > 0
    assert index["skips"]["unreadable"] > 0
    assert index["skips"]["iscrowd"] == index["skips"]["degenerate_polygon"]


def test_folder_source_counts_corrupt_and_tiny_images(tmp_path, image_folder):
    out = tmp_path / "folder"
    run_cli(
        "generate", "--source", "folder", "--images", str(image_folder), "--num-pairs", "30", "--out", str(out), *SMALL
    )
    index = json.loads((out / "index.json").read_text())
    assert index["pairs_written"] == 30
    assert index["skips"]["unreadable"] > 0 and index["skips"]["too_small"] > 0
    files = {s["json"]["source"]["file"] for s in read_back(out)}
    assert files <= {f"img{i}.png" for i in range(6)}


def test_opencv_generation_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from metauas.changegen import GenerateConfig, generate_dataset\n"
        f"generate_dataset(GenerateConfig(out={str(tmp_path / 'g')!r}, num_pairs=12, size=48, progress=False))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from metauas.cli import main\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_fork_and_spawn_workers_write_the_same_bytes(tmp_path):
    for method in ("fork", "spawn"):
        run_cli(
            "generate",
            "--num-pairs",
            "24",
            "--shard-size",
            "6",
            "--size",
            "48",
            "--workers",
            "2",
            "--start-method",
            method,
            "--out",
            str(tmp_path / method),
            "--no-progress",
        )
    assert shas(tmp_path / "fork") == shas(tmp_path / "spawn")


def test_python_api_heldout_split_uses_only_heldout_photos_and_scenes(tmp_path):
    from metauas.changegen import GenerateConfig, generate_dataset
    from metauas.changegen.builtin import HELDOUT_PHOTOS

    index = generate_dataset(
        GenerateConfig(out=tmp_path / "held", num_pairs=24, size=48, builtin_split="heldout", progress=False)
    )
    assert index == tmp_path / "held" / "index.json" and index.is_file()
    for s in read_back(tmp_path / "held"):
        src = s["json"]["source"]
        assert src.get("file") in HELDOUT_PHOTOS if src["kind"] == "folder" else src["namespace"] == 2
