"""Shared fixtures: a tiny MVTec-layout benchmark drawn here (64 px), a tiny untrained
checkpoint (random encoder weights, so no weights package is needed), training shards."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_data import make_mvtec, write_shards


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory) -> Path:
    return make_mvtec(tmp_path_factory.mktemp("mvtec"), {"tile": (200, 160, 120), "plate": (90, 140, 210)})


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from metauas.model.checkpoint import save_checkpoint
    from metauas.model.config import EncoderConfig, ModelConfig
    from metauas.model.network import MetaUAS

    with torch.random.fork_rng():  # the same tiny model whatever ran before it in this worker
        torch.manual_seed(0)
        model = MetaUAS(ModelConfig(encoder=EncoderConfig(weights="none"), decoder_channels=(32, 16, 16, 8, 8)))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, size=64, step=0)


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_worker():
    """pytest -n 2 on 2 cores: one torch thread per worker avoids oversubscription.
    (The metric tests also run where torch is not installed: see `make test-numpy1`.)"""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    """4 training shards x 8 pairs and 1 validation shard x 8 pairs, 64 px."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root / "train", shards=4, per_shard=8, seed=0)
    write_shards(root / "val", shards=1, per_shard=8, seed=1)
    return root


LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


@pytest.fixture(scope="session", autouse=True)
def _no_launcher_environment():
    """A test suite started under torchrun (or a cluster job) must not turn every CLI
    call and subprocess of the tests into one rank of a process group: the variables are
    removed for the session (tests that want ranks set them on their own subprocess)."""
    import os

    saved = {k: os.environ.pop(k) for k in LAUNCHER_VARIABLES if k in os.environ}
    yield
    os.environ.update(saved)
