"""`metauas bench train`: can the data path feed the GPUs?

Measured in one run on the same shards:
- per pair, on one core: decoding (the floor: nothing can be faster than reading the
  pair), OpenCV augmentation, drawing the choices for the device path, collation, the
  move to the device and, on that device, the batched augmentation;
- the real loader (DataLoader workers reading the tars) in both places of augmentation,
  as pairs/s per loader core, against the decode floor per core (target >= 0.5: decode +
  augment + collate cost at most twice the decode);
- from that, how many GPUs one node's cores can feed at a stated per-GPU training rate
  (benchmarks/gpu_check.sh measures that rate on a GPU machine);
- optionally (`steps` > 0) the training step's own pairs/s on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch

from metauas.data.format import decode_pair, expand_urls, iter_samples
from metauas.model.config import ModelConfig
from metauas.trainer.augment import AugmentConfig, augment_pair, draw_params, resize_pair
from metauas.trainer.stream import PREFETCH, StreamConfig, collate_pairs, to_device, train_loader


@dataclass(frozen=True)
class TrainBenchResult:
    """ms per pair of each stage (one core), loader pairs/s per core by place, step rate."""

    stages: dict[str, float]
    loader_per_core: dict[str, float]  # "workers" | "device" -> pairs/s per loader process
    train_pairs_s: float | None = None
    workers: int = 1
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def floor(self) -> float:
        """Decode-only pairs/s on one core."""
        return 1000.0 / self.stages["decode"]

    def ratio(self, place: str) -> float:
        """Loader pairs/s per core over the decode floor per core."""
        return self.loader_per_core[place] / self.floor

    def budget(self, place: str) -> float:
        """Decode over the sum of a worker's stages per pair (read, decode, augment or draw,
        collate): what the loader would reach with nothing else on its core."""
        work = {
            "workers": ("read", "decode", "augment (OpenCV)", "collate"),
            "device": ("read", "decode", "draw choices", "collate + pack choices"),
        }[place]
        return self.stages["decode"] / sum(self.stages[k] for k in work)


def _best_ms(run: Callable[[], object], items: int, repeats: int = 3) -> float:
    """Fastest of `repeats` runs, in ms per item (the floor of a noisy shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return 1000.0 * best / items


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_times(
    urls: list[str], samples: list[dict], size: int, batch_size: int, cfg: AugmentConfig, device: torch.device
) -> dict[str, float]:
    """ms per pair of each stage of the data path, measured in this process on one core
    (OpenCV and torch limited to one thread); all but reading on `samples`, already read
    into memory."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        rng = np.random.default_rng(0)
        pairs = [decode_pair(s) for s in samples]
        n = len(pairs) // batch_size * batch_size
        draws = [{**resize_pair(p, size), "params": draw_params(rng, cfg, (size, size), size)} for p in pairs[:n]]
        augmented = [augment_pair(p, size, cfg, rng) for p in pairs[:n]]
        worker_batches = [collate_pairs(augmented[i : i + batch_size]) for i in range(0, n, batch_size)]
        device_batches = [collate_pairs(draws[i : i + batch_size]) for i in range(0, n, batch_size)]

        def on_device(batches: list[dict], fn: Callable) -> Callable[[], None]:
            def run() -> None:
                for b in batches:
                    fn(b, device)
                _sync(device)

            return run

        from metauas.trainer.device_augment import augment_batch

        on_device(device_batches, augment_batch)()  # warm-up (CUDA kernels, allocator)
        return {
            "read": _best_ms(lambda: list(islice(iter_samples(urls), len(samples))), len(samples)),
            "decode": _best_ms(lambda: [decode_pair(s, meta=False) for s in samples], len(samples)),
            "augment (OpenCV)": _best_ms(lambda: [augment_pair(p, size, cfg, rng) for p in pairs], len(pairs)),
            "draw choices": _best_ms(lambda: [draw_params(rng, cfg, (size, size), size) for _ in pairs], len(pairs)),
            "collate": _best_ms(
                lambda: [collate_pairs(augmented[i : i + batch_size]) for i in range(0, n, batch_size)], n
            ),
            "collate + pack choices": _best_ms(
                lambda: [collate_pairs(draws[i : i + batch_size]) for i in range(0, n, batch_size)], n
            ),
            "to device": _best_ms(on_device(worker_batches, to_device), n),
            f"augment on {device.type}": _best_ms(on_device(device_batches, augment_batch), n),
        }
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def loader_rate(
    urls: list[str], size: int, batch_size: int, workers: int, batches: int, place: str, cfg: AugmentConfig
) -> float:
    """Pairs/s of the training stream (DataLoader workers reading the tars) after its first
    batches (worker start-up excluded); the best of three timed stretches, as the stage
    timings take the best of three runs (a shared machine only ever slows things down)."""
    stream = StreamConfig(
        tuple(urls), size=size, batch_size=batch_size, workers=workers, augment=cfg, augment_on=place, resampled=True
    )
    it = iter(train_loader(stream))
    for _ in range(PREFETCH * workers + 2):  # start-up, then the batches the workers had queued
        next(it)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        best = max(best, batches * batch_size / (time.perf_counter() - t))
    return best


def step_rate(cfg: ModelConfig, batch: dict, steps: int, device: torch.device) -> float:
    """Pairs/s of training steps on one in-memory batch (after one warm-up step)."""
    from metauas.model.network import MetaUAS
    from metauas.trainer.losses import segmentation_loss

    model = MetaUAS(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=1e-4)
    prompt, query, masks = to_device(batch, device)

    def step() -> None:
        loss = segmentation_loss(model(prompt, query), masks, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * prompt.shape[0] / (time.perf_counter() - t)


@dataclass(frozen=True)
class TrainBenchConfig:
    size: int = 256
    batch_size: int = 16
    workers: int = 1
    batches: int = 8
    pairs: int = 128  # samples kept in memory for the per-stage timings
    steps: int = 0  # training steps timed (0: none)
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def bench_train(shards: str, cfg: TrainBenchConfig) -> TrainBenchResult:
    """Every figure of the data path on `shards` (see the module docstring)."""
    device = torch.device(cfg.device)
    urls = expand_urls(shards)
    samples = [s for _, s in zip(range(cfg.pairs), iter_samples(urls))]
    stages = stage_times(urls, samples, cfg.size, cfg.batch_size, cfg.augment, device)
    per_core = {
        place: loader_rate(urls, cfg.size, cfg.batch_size, cfg.workers, cfg.batches, place, cfg.augment) / cfg.workers
        for place in ("workers", "device")
    }
    train = None
    if cfg.steps:
        pairs = [decode_pair(s) for s in samples[: cfg.batch_size]]
        batch = collate_pairs([augment_pair(p, cfg.size, cfg.augment, np.random.default_rng(0)) for p in pairs])
        train = step_rate(cfg.model, batch, cfg.steps, device)
    return TrainBenchResult(stages, per_core, train, cfg.workers, str(device))


def bench_train_builtin(pairs: int, cfg: TrainBenchConfig) -> TrainBenchResult:
    """`bench_train` on `pairs` builtin pairs generated to a temporary folder (4 shards)."""
    import tempfile

    from metauas.changegen.config import GenerateConfig
    from metauas.changegen.run import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(
            GenerateConfig(out=Path(tmp), num_pairs=pairs, size=cfg.size, shard_size=max(1, pairs // 4), progress=False)
        )
        return bench_train(tmp, cfg)


def report(r: TrainBenchResult, gpu_pairs_s: float, cores: Sequence[int]) -> list[str]:
    """The printed table: stages, loader vs floor, GPUs per node at `gpu_pairs_s`."""
    lines = [
        "per pair, one core (ms): " + " | ".join(f"{k} {v:.2f}" for k, v in r.stages.items()),
        f"decode floor: {r.floor:.0f} pairs/s per core",
        "| augmentation on | loader pairs/s per core | / decode floor | its stages: decode / sum | target |",
        "|---|---|---|---|---|",
    ]
    for place in ("workers", "device"):
        lines.append(
            f"| {place} | {r.loader_per_core[place]:.0f} | {r.ratio(place):.2f} | {r.budget(place):.2f} | >= 0.5 |"
        )
    if r.train_pairs_s is not None:
        lines.append(f"training step on {r.device}: {r.train_pairs_s:.2f} pairs/s")
    lines += [
        f"GPUs one node feeds at {gpu_pairs_s:.0f} training pairs/s per GPU (loader cores only):",
        "| loader cores | pairs/s, workers augment | GPUs | pairs/s, device augments | GPUs |",
        "|---|---|---|---|---|",
    ]
    for n in cores:
        w, d = (n * r.loader_per_core[p] for p in ("workers", "device"))
        lines.append(f"| {n} | {w:.0f} | {w / gpu_pairs_s:.1f} | {d:.0f} | {d / gpu_pairs_s:.1f} |")
    return lines
