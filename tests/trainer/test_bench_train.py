"""`metauas bench train` prints every stage, both loader places against the decode floor,
and the GPUs-per-node table (figures are machine-dependent: no timing is asserted)."""

import re

from metauas.cli import main


def test_bench_train_prints_stages_floor_and_gpus_per_node(shard_dir, capsys):
    args = [
        "bench",
        "train",
        "--shards",
        str(shard_dir / "train"),
        "--size",
        "48",
        "--batch-size",
        "4",
        "--pairs",
        "16",
        "--batches",
        "2",
        "--device",
        "cpu",
        "--gpu-pairs-s",
        "100",
        "--cores",
        "2,4",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    for stage in ("read", "decode", "augment (OpenCV)", "draw choices", "collate", "to device", "augment on cpu"):
        assert f"{stage} " in out
    rows = {m[0]: m[1:] for m in re.findall(r"\| (workers|device) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", out)}
    assert set(rows) == {"workers", "device"} and all(float(v) > 0 for r in rows.values() for v in r)
    assert "at 100 training pairs/s per GPU" in out and re.search(r"\| 4 \| [0-9]+ \| [0-9.]+ \|", out)


def test_bench_train_rejects_impossible_settings(capsys):
    assert main(["bench", "train", "--pairs", "4", "--batch-size", "8"]) == 2
    assert "--pairs >= --batch-size" in capsys.readouterr().err
