"""What docs/shards.md shows users runs as printed: the readers, on shards the test
makes, and the foreign generator, whose shards the trainer then trains on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from doc_commands import DOCS, fenced


def python_blocks(page: str, heading: str) -> list[str]:
    """The ```python blocks under one `## heading` of a docs page."""
    text = (DOCS / page).read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return fenced(section, "python")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    code = "import sys; from metauas.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "generate",
            "--out",
            "pairs",
            "--num-pairs",
            "12",
            "--size",
            "64",
            "--shard-size",
            "6",
            "-q",
        ],
        cwd=root,
        check=True,
    )
    return root


@pytest.mark.parametrize(
    "heading, printed",
    [
        ("Reading the shards without torch: `metauas.data.format`", "12 samples; nothing skipped"),
        ("Reading the shards in plain PyTorch + webdataset", "batch (4, 3, 64, 64) (4, 1, 64, 64) 4\n" * 3),
    ],
)
def test_shards_md_readers_run_as_printed(pairs, heading, printed):
    (block,) = python_blocks("shards.md", heading)
    code = block.replace("shard-{000000..000009}.tar", "shard-{000000..000001}.tar")
    code = code.replace("num_workers=4", "num_workers=0")
    code = code.replace("batched(16,", "batched(4,")  # 12 pairs: three batches
    code = code.replace(
        "    ...  # prompt", "    print('batch', tuple(prompt.shape), tuple(mask.shape), len(change))  # prompt"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=pairs, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert printed in proc.stdout


def test_shards_md_foreign_generator_writes_shards_the_trainer_trains_on(tmp_path):
    """The page's ShardWriter example, run as printed, then two training steps on its shards."""
    from make_data import tiny_model_config

    from metauas.trainer.config import TrainConfig
    from metauas.trainer.train import train

    (block,) = python_blocks("shards.md", "Writing shards from your own generator: `metauas.data.ShardWriter`")
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "boxes" / "index.json").read_text())
    assert index["complete"] and index["pairs_written"] == 100 and index["changes"]["none"] == 20
    assert [s["name"] for s in index["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    run = tmp_path / "run"
    train(
        TrainConfig(
            train=str(tmp_path / "boxes"),
            val=str(tmp_path / "boxes"),
            out=str(run),
            model=tiny_model_config(),
            size=64,
            batch_size=4,
            steps=2,
            workers=0,
            val_pairs=8,
            val_every=100,
            log_every=1,
            progress=False,
        )
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[-1]["val_pairs"] == 8 and (run / "last.pt").is_file()
