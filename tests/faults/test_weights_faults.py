"""Weight files the user names (a checkpoint, `--encoder-weights`) that are memory bombs
or not weights at all: one line, in bounded memory, never a traceback."""

from __future__ import annotations

import json
import struct

import pytest
from fault_helpers import cli_peak, one_line_error, run_main
from hostile import zip_bomb
from make_data import tiny_model_config

from metauas.model.checkpoint import save_checkpoint
from metauas.model.network import MetaUAS

TRAIN = ["--size", "32", "--batch-size", "2", "--steps", "1", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 15 MB checkpoint whose first tensor's member inflates to 1.5 GB."""
    root = tmp_path_factory.mktemp("bomb")
    tiny = save_checkpoint(root / "tiny.pt", MetaUAS(tiny_model_config()), size=64, step=0)
    return zip_bomb(tiny, root / "bomb.pt")


def test_a_zip_bomb_checkpoint_is_one_line_in_bounded_memory(tmp_path, bomb, mvtec_root):
    """Measured against the same command refusing a text file: torch's reader would add
    the 1.5 GB the member inflates to (2.2 GB in all, measured before the check)."""
    image = mvtec_root / "tile" / "train" / "good" / "000.png"
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    peaks = {}
    for name, checkpoint in (("text", text), ("bomb", bomb)):
        args = ["predict", "--checkpoint", checkpoint, "--prompt", image, "--query", image, "--out", tmp_path / name]
        proc, peaks[name] = cli_peak(*args)
        one_line_error(proc, str(checkpoint), "corrupt or not a checkpoint")
    assert "compressed" in proc.stderr
    assert peaks["bomb"] < peaks["text"] + (512 << 20), peaks


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _safetensors_bomb(path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**5, 10**5], "data_offsets": [0, 4 * 10**10]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp, bomb: bomb, ["compressed", "not a weights file"]),
        (lambda tmp, bomb: _safetensors_bomb(tmp / "huge.safetensors"), ["safetensors", "not a weights file"]),
        (lambda tmp, bomb: tmp / "x.pt", ["not found"]),
        (lambda tmp, bomb: _write(tmp / "photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64), ["torch.load"]),
    ],
)
def test_encoder_weights_that_are_bombs_or_not_weights_are_one_line(tmp_path, bomb, shard_dir, capsys, make, words):
    weights = make(tmp_path, bomb)
    args = ["train", "--train", shard_dir / "train", "--out", tmp_path / "run", "--encoder-weights", weights, *TRAIN]
    one_line_error(run_main(capsys, *args), *words)
    assert not (tmp_path / "run" / "last.pt").exists()
