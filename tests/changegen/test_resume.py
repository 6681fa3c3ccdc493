"""Leftovers of a crash, --shards and RANK/WORLD_SIZE parts (a real SIGKILL at a random point:
tests/faults/test_generate_faults.py)."""

from __future__ import annotations

import hashlib
import json
import os

from changegen_helpers import run_cli

ARGS = ["--num-pairs", "120", "--shard-size", "8", "--size", "48", "--seed", "3", "--no-progress"]


def shas(out) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_leftover_temp_and_missing_shards_are_remade(tmp_path):
    out = tmp_path / "d"
    run_cli("generate", *ARGS, "--out", str(out))
    before = shas(out)
    (out / "shard-000004.tar").unlink()
    (out / "shard-000009.tar").unlink()
    (out / ".shard-000004.tar.tmp-999").write_bytes(b"half a shard")
    run_cli("generate", *ARGS, "--out", str(out))
    assert shas(out) == before
    assert not (out / ".shard-000004.tar.tmp-999").exists()


def test_shard_ranges_and_ranks_make_disjoint_parts_of_one_dataset(tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    run_cli("generate", *ARGS, "--out", str(full))
    run_cli("generate", *ARGS, "--out", str(parts), "--shards", "0:5")
    index = json.loads((parts / "index.json").read_text())
    assert not index["complete"] and index["pairs_written"] == 40
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}
        run_cli("generate", *ARGS, "--out", str(parts), "--shards", "5:15", env=env)
    assert shas(parts) == shas(full)
    assert (parts / "index.json").read_bytes() == (full / "index.json").read_bytes()


def test_rank_partition_is_round_robin_within_the_range():
    from metauas.changegen.config import GenerateConfig
    from metauas.changegen.run import rank_shards

    cfg = GenerateConfig(out=".", num_pairs=100, shard_size=10, shards="2:9")
    got = [rank_shards(cfg, {"RANK": str(r), "WORLD_SIZE": "3"}) for r in range(3)]
    assert got == [[2, 5, 8], [3, 6], [4, 7]]
    assert rank_shards(cfg, {}) == list(range(2, 9))


def test_config_from_index_json_remakes_the_dataset_and_typed_options_override(tmp_path):
    first = tmp_path / "a"
    run_cli(
        "generate",
        "--out",
        str(first),
        "--num-pairs",
        "6",
        "--size",
        "64",
        "--shard-size",
        "3",
        "--seed",
        "4",
        "--change-weights",
        "local=1,none=1",
        "-q",
    )
    run_cli("generate", "--config", str(first / "index.json"), "--out", str(tmp_path / "b"), "-q")
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (first / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    run_cli("generate", "--config", str(first / "index.json"), "--out", str(tmp_path / "c"), "--seed", "5", "-q")
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["config"]["seed"] == 5 and index["config"]["change_weights"]["exchange"] == 0.0
    assert (first / "shard-000000.tar").read_bytes() != (tmp_path / "c" / "shard-000000.tar").read_bytes()
