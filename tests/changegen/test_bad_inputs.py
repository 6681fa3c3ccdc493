"""User mistakes are one `error:` line and status 2, before any work starts."""

from __future__ import annotations

import json

import pytest
from changegen_helpers import run_cli

SMALL = ["--num-pairs", "4", "--size", "48", "--no-progress"]


def assert_user_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0]


def test_missing_annotation_file(tmp_path):
    proc = run_cli(
        "generate",
        "--source",
        "coco",
        "--coco-images",
        str(tmp_path),
        "--coco-annotations",
        str(tmp_path / "nope.json"),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
        check=False,
    )
    assert_user_error(proc, "--coco-annotations", "nope.json")
    assert not (tmp_path / "o").exists()


def test_annotation_file_that_is_not_coco(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = run_cli(
        "generate",
        "--source",
        "coco",
        "--coco-images",
        str(tmp_path),
        "--coco-annotations",
        str(bad),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
        check=False,
    )
    assert_user_error(proc, "not a COCO instances file")


def test_coco_with_no_images(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    proc = run_cli(
        "generate",
        "--source",
        "coco",
        "--coco-images",
        str(tmp_path),
        "--coco-annotations",
        str(empty),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
        check=False,
    )
    assert_user_error(proc, "no images")


def test_empty_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "notes.txt").write_text("no images here")
    proc = run_cli(
        "generate",
        "--source",
        "folder",
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
        check=False,
    )
    assert_user_error(proc, "no image files")


def test_folder_of_only_broken_images_is_a_clear_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"broken")
    proc = run_cli(
        "generate",
        "--source",
        "folder",
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
        check=False,
    )
    assert_user_error(proc, "no usable image", "unreadable")
    assert not list((tmp_path / "o").glob("*.tar"))


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = run_cli("generate", "--out", str(blocker / "sub"), *SMALL, check=False)
    assert_user_error(proc, "--out", "not writable")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--change-weights", "vanish=1"], ["vanish"]),
        (["--change-weights", "local=0,none=0"], ["positive sum"]),
        (["--shards", "3:9"], ["--shards"]),
        (["--source", "folder"], ["--images"]),
        (["--image-format", "gif"], ["--image-format"]),
        (["--builtin-split", "test"], ["--builtin-split"]),
        (["--inpainter", "magic"], ["--inpainter"]),
    ],
)
def test_bad_flags(tmp_path, args, words):
    proc = run_cli("generate", "--out", str(tmp_path / "o"), *SMALL, *args, check=False)
    assert_user_error(proc, *words)


def test_other_config_in_the_same_folder_is_refused(tmp_path):
    run_cli("generate", "--out", str(tmp_path / "o"), *SMALL)
    proc = run_cli("generate", "--out", str(tmp_path / "o"), *SMALL, "--seed", "5", check=False)
    assert_user_error(proc, "another config")


def test_preview_of_missing_shard(tmp_path):
    proc = run_cli("preview", str(tmp_path / "x.tar"), "--out", str(tmp_path / "s.png"), check=False)
    assert_user_error(proc, "not found")
