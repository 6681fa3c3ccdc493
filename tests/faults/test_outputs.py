"""Every command's --out pointing at a file or at a place no one may write: one line,
status 2, before any work, and nothing written anywhere."""

from __future__ import annotations

import pytest
from fault_helpers import cli, one_line_error, run_main

GEN = ["--num-pairs", "2", "--size", "32", "--no-progress"]


def _commands(tmp, mvtec, ckpt, shards, image):
    """Each command with everything right but its output place (OUT)."""
    return {
        "generate": ["generate", *GEN, "--out", "OUT"],
        "preview": ["preview", str(shards / "train" / "shard-000000.tar"), "--out", "OUT/sheet.png"],
        "train": [
            "train",
            "--train",
            str(shards / "train"),
            "--out",
            "OUT",
            "--steps",
            "1",
            "--size",
            "32",
            "--encoder-weights",
            "none",
            "--workers",
            "0",
            "--no-progress",
        ],
        "evaluate": [
            "evaluate",
            "--method",
            "lookup",
            "--data",
            str(mvtec),
            "--seeds",
            "1",
            "--size",
            "32",
            "--out",
            "OUT",
            "--no-progress",
        ],
        "predict": [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--prompt",
            str(image),
            "--query",
            str(image),
            "--out",
            "OUT",
            "--no-progress",
        ],
        "import-official": ["import-official", str(tmp / "missing.ckpt"), "--out", "OUT/official.pt"],
    }


@pytest.fixture(scope="module")
def image(mvtec_root):
    return mvtec_root / "tile" / "train" / "good" / "000.png"


@pytest.mark.parametrize("command", ["generate", "preview", "train", "evaluate", "predict", "import-official"])
def test_out_under_a_file_is_one_line_before_any_work(
    command, tmp_path, mvtec_root, checkpoint, shard_dir, image, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    commands = _commands(tmp_path, mvtec_root, checkpoint, shard_dir, image)
    args = [a.replace("OUT", str(blocker)) for a in commands[command]]
    one_line_error(run_main(capsys, *args), str(blocker))
    assert blocker.read_text() == "a file where a folder should be"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("command", ["generate", "preview", "train", "evaluate", "predict", "import-official"])
def test_out_on_a_read_only_filesystem_is_one_line(
    command, tmp_path, mvtec_root, checkpoint, shard_dir, image, readonly_dir, capsys
):
    out = readonly_dir / "out"
    args = [a.replace("OUT", str(out)) for a in _commands(tmp_path, mvtec_root, checkpoint, shard_dir, image)[command]]
    one_line_error(run_main(capsys, *args), "not writable")
    assert not list(readonly_dir.iterdir())


def test_evaluate_refuses_a_file_out_before_scoring(tmp_path, capsys):
    """The work is not lost: the check comes before the benchmark is even listed."""
    blocker = tmp_path / "results"
    blocker.write_text("")
    proc = run_main(
        capsys, "evaluate", "--method", "lookup", "--data", str(tmp_path / "no-such-benchmark"), "--out", str(blocker)
    )
    one_line_error(proc, "is a file, not a folder")


def test_preview_wants_an_image_name(tmp_path, shard_dir):
    """In a real process, as a user types it."""
    proc = cli("preview", str(shard_dir / "train" / "shard-000000.tar"), "--out", str(tmp_path / "x.txt"))
    one_line_error(proc, ".png or .jpg")
    assert not (tmp_path / "x.txt").exists()
