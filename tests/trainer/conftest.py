"""Fixtures for the trainer tests (helpers live in trainer_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_helpers import write_shards


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    """4 training shards x 8 pairs and 1 validation shard x 8 pairs, 64 px."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root / "train", shards=4, per_shard=8, seed=0)
    write_shards(root / "val", shards=1, per_shard=8, seed=1)
    return root
