"""`metauas bench train`: is the data loader fast enough to keep training busy?

Measures, in one run on the same shards: loader pairs/s (decode + augment + batch in the
DataLoader workers, no model) and training pairs/s (forward, backward, AdamW step on
batches already in memory, so the two never compete). The loader must be >= 3x the step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from metauas.changegen.format import expand_urls
from metauas.model.config import ModelConfig
from metauas.model.network import MetaUAS
from metauas.trainer.stream import StreamConfig, to_float, train_loader
from metauas.trainer.train import segmentation_loss


@dataclass(frozen=True)
class TrainBenchResult:
    loader_pairs_s: float
    train_pairs_s: float

    @property
    def ratio(self) -> float:
        return self.loader_pairs_s / self.train_pairs_s


def loader_rate(urls: list[str], size: int, batch_size: int, workers: int, batches: int) -> tuple[float, list]:
    """Pairs/s of the training stream after its first batch (worker start-up excluded)."""
    it = iter(train_loader(StreamConfig(tuple(urls), size=size, batch_size=batch_size, workers=workers)))
    kept = [next(it)]
    t = time.perf_counter()
    for _ in range(batches):
        kept.append(next(it))
    return batches * batch_size / (time.perf_counter() - t), kept[:2]


def step_rate(cfg: ModelConfig, batch: dict, steps: int) -> float:
    """Pairs/s of training steps on one in-memory batch (after one warm-up step)."""
    model = MetaUAS(cfg).train()
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=1e-4)
    prompt, query = to_float(batch["prompt"], "cpu"), to_float(batch["query"], "cpu")
    masks = batch["mask"].float()

    def step() -> None:
        loss = segmentation_loss(model(prompt, query), masks, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * prompt.shape[0] / (time.perf_counter() - t)


def bench_train(shards: str, cfg: ModelConfig, size: int, batch_size: int, workers: int,
                batches: int, steps: int) -> TrainBenchResult:
    loader, kept = loader_rate(expand_urls(shards), size, batch_size, workers, batches)
    return TrainBenchResult(loader_pairs_s=loader, train_pairs_s=step_rate(cfg, kept[-1], steps))


def bench_train_builtin(pairs: int, cfg: ModelConfig, size: int, batch_size: int, workers: int,
                        batches: int, steps: int) -> TrainBenchResult:
    """`bench_train` on `pairs` builtin pairs generated to a temporary folder (4 shards)."""
    import tempfile

    from metauas.changegen.config import GenerateConfig
    from metauas.changegen.run import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(GenerateConfig(out=tmp, num_pairs=pairs, size=size, shard_size=max(1, pairs // 4),
                                        progress=False))
        return bench_train(tmp, cfg, size, batch_size, workers, batches, steps)
