"""Shards whose tar headers lie (sizes of 2^80, 2^60, 8 GB or 10^30 bytes, a pax record
that never ends), a gzip member that expands to 300 MB and a PNG bomb as a member: each
is a counted skip, in bounded memory, for preview and for training, and `--resume`
passes them again."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from fault_helpers import CODE, REPO, clean_env, run_main
from hostile import header_shards, png_bomb

from metauas.model.checkpoint import read_checkpoint

MEMORY = 768 * 2**20  # bytes of data the preview may map (RLIMIT_DATA): the bomb alone needs 768 MB as RGB
UNREADABLE = ("base256_2e80", "base256_2e60", "octal_8gb", "pax_size_1e30", "pax_zero_length")
TOO_LARGE = ("png_bomb_member", "gzip_huge_member")


@pytest.fixture(scope="module")
def lying(tmp_path_factory):
    root = tmp_path_factory.mktemp("lying")
    return header_shards(root / "shards", png_bomb(root / "bomb.png", 16000))


def test_preview_counts_every_lying_header_in_bounded_memory(tmp_path, lying):
    def memory_bound() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))

    sheet = tmp_path / "sheet.png"
    shards = [str(lying[name]) for name in (*UNREADABLE, *TOO_LARGE)]
    proc = subprocess.run(
        [sys.executable, "-c", CODE, "preview", *shards, "--n", "64", "--out", str(sheet)],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        preexec_fn=memory_bound,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "2 too_large, 5 unreadable_shard" in warning[0], proc.stderr[-3000:]
    assert sheet.stat().st_size > 0


def test_training_passes_lying_headers_and_resume_passes_them_again(tmp_path, lying, shard_dir, capsys):
    """Every shard of the list is read before the first batch (the shuffle buffer fills
    first), and a resumed run reads them again while it skips the samples already used."""
    shards = [str(shard_dir / "train" / "shard-000000.tar"), *(str(p) for p in lying.values())]
    run = tmp_path / "run"
    args = ["--train", ",".join(shards).join("{}"), "--out", run, "--size", "32", "--batch-size", "2"]
    args += ["--encoder-weights", "none", "--workers", "0", "--no-progress", "--save-every", "2"]
    for steps, more in (("2", []), ("4", ["--resume"])):
        proc = run_main(capsys, "train", *args, "--steps", steps, *more)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert read_checkpoint(run / "last.pt")["meta"]["step"] == int(steps)
