"""ShardWriter, the writer any generator feeds: what it writes reads back through the
one reader, byte for byte the same on a rerun, and never as half a shard."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from metauas.data import ShardWriter, count_samples, iter_pairs
from metauas.errors import UserError


def _pairs(n: int, size: int = 32):
    rng = np.random.default_rng(3)
    for i in range(n):
        prompt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        query, mask = prompt.copy(), np.zeros((size, size), bool)
        if i % 2:
            query[4:12, 8:20], mask[4:12, 8:20] = 255, True
        yield prompt, query, mask, {"change": "local" if i % 2 else "none", "params": {"i": np.int64(i)}}


def _write(folder, n: int = 7, **kw):
    with ShardWriter(folder, "test-gen", "2.0", shard_size=3, image_format="png", seed=11, **kw) as writer:
        keys = [writer.write(*pair) for pair in _pairs(n)]
    return keys


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_pairs_read_back_as_written_with_their_meta_and_index(tmp_path):
    keys = _write(tmp_path / "a")
    assert keys == [f"{i:09d}" for i in range(7)]
    read = list(iter_pairs(str(tmp_path / "a")))
    for (prompt, query, mask, meta), pair in zip(_pairs(7), read, strict=True):
        assert np.array_equal(pair["prompt"], prompt) and np.array_equal(pair["query"], query)
        assert np.array_equal(pair["mask"], mask.astype(np.uint8))
        assert pair["meta"]["change"] == meta["change"] and pair["meta"]["params"] == {"i": int(meta["params"]["i"])}
    assert read[4]["meta"] | {"params": None} == {
        "schema": "changepair/1",
        "change": "none",
        "source": {},
        "params": None,
        "seed": 11,
        "index": 4,
        "generator": {"name": "test-gen", "version": "2.0"},
    }
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["complete"] and index["num_shards"] == 3 and index["num_pairs"] == 7
    assert [s["count"] for s in index["shards"]] == [3, 3, 1] and index["changes"]["local"] == 3
    assert count_samples([str(p) for p in sorted((tmp_path / "a").glob("*.tar"))]) == 7


def test_the_same_pairs_give_the_same_bytes(tmp_path):
    _write(tmp_path / "a", config={"note": "x"})
    _write(tmp_path / "b", config={"note": "x"})
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert len(_digests(tmp_path / "a")) == 4  # three shards and index.json


def test_an_error_keeps_the_complete_shards_and_no_partial_one(tmp_path):
    with pytest.raises(RuntimeError, match="the generator failed"):
        with ShardWriter(tmp_path, "test-gen", shard_size=3) as writer:
            for i, pair in enumerate(_pairs(7)):
                if i == 5:
                    raise RuntimeError("the generator failed")
                writer.write(*pair)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".changegen")) == ["shard-000000.tar"]
    assert len(list(iter_pairs(str(tmp_path)))) == 3


def test_bad_pairs_and_a_used_folder_are_refused(tmp_path):
    _write(tmp_path / "a")
    with pytest.raises(UserError, match="already holds shards"):
        ShardWriter(tmp_path / "a", "test-gen")
    prompt, query, mask, _ = next(_pairs(1))
    with ShardWriter(tmp_path / "b", "test-gen") as writer:
        with pytest.raises(ValueError, match="must be one of"):
            writer.write(prompt, query, mask, {"change": "moved"})
        with pytest.raises(ValueError, match="must be H x W x 3"):
            writer.write(prompt, query[:16], mask, {"change": "local"})
        writer.write(prompt, query, mask, {"change": "none"})
    assert json.loads((tmp_path / "b" / "index.json").read_text())["pairs_written"] == 1
