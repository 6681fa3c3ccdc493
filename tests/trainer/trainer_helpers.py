"""Helpers for the trainer tests: real changepair/1 tars written with webdataset, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from metauas.trainer.encoder import EncoderConfig
from metauas.trainer.model import ModelConfig

TINY_DECODER = (16, 16, 8, 8, 8)


def tiny_model_config(**overrides) -> ModelConfig:
    """Random-weight lite0 encoder with a small decoder: fast, same code paths."""
    fields = {"encoder": EncoderConfig(weights="none"), "decoder_channels": TINY_DECODER, **overrides}
    return ModelConfig(**fields)


def make_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random image and a copy with a bright rectangle pasted in; its mask."""
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    prompt = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    query = prompt.copy()
    mask = np.zeros((size, size), np.uint8)
    if rng.random() < 0.85:
        h, w = rng.integers(size // 6, size // 3, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        query[y:y + h, x:x + w] = rng.integers(0, 255, 3, dtype=np.uint8)
        mask[y:y + h, x:x + w] = 255
    return prompt, query, mask


def write_shards(folder: Path, shards: int, per_shard: int, size: int = 64, seed: int = 0,
                 prefix: str = "shard") -> list[Path]:
    """Write `shards` tars of `per_shard` samples following the changepair/1 schema."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(shards):
        path = folder / f"{prefix}-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                index = s * per_shard + i
                prompt, query, mask = make_pair(rng, size)
                sink.write({
                    "__key__": f"{index:08d}",
                    "prompt.png": cv2.imencode(".png", prompt[..., ::-1])[1].tobytes(),
                    "query.png": cv2.imencode(".png", query[..., ::-1])[1].tobytes(),
                    "mask.png": cv2.imencode(".png", mask)[1].tobytes(),
                    "json": json.dumps({"schema": "changepair/1", "index": index,
                                        "change": "local" if mask.any() else "none"}).encode(),
                })
        paths.append(path)
    return paths
