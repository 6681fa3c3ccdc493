"""How long a run is and how its learning rate moves, and the checks made before anything
is built (a run that cannot start says so at once, not after the model is built).

The learning-rate schedule (linear warmup, then cosine) follows training progress: steps
done over `steps` or, with a wall-clock budget, time used over `max_minutes`.
"""

from __future__ import annotations

import logging
import math

from metauas.data.format import ReadStats, count_samples, iter_pairs
from metauas.errors import UserError
from metauas.trainer.config import TrainConfig

log = logging.getLogger("metauas.train")


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine from 1 to `min_lr_ratio` over progress."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def total_steps(cfg: TrainConfig, urls: list[str], world: int) -> int | None:
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * count_samples(urls) / (cfg.batch_size * world)))
    return None


def first_pair(urls: list[str]) -> None:
    """Read until one training pair decodes, before anything is built: shards that are
    all corrupt are one clear error, not an endless or empty stream."""
    stats = ReadStats(quiet=True)
    for _ in iter_pairs(urls, stats):
        return
    raise UserError(
        f"no readable training pairs in `train` ({len(urls)} shard(s)): "
        f"{stats.summary() or 'the shards hold no samples'}"
    )


def check_length(cfg: TrainConfig, total: int | None) -> None:
    """How long to train must be said."""
    if total is None and cfg.max_minutes is None:
        raise UserError("say how long to train: `steps`, `epochs` or `max_minutes`")


def warn_short_warmup(cfg: TrainConfig, total: int | None, main: bool) -> None:
    """A run shorter than its warmup never reaches its learning rate: the main process
    says so when the run starts (after every check that could refuse it)."""
    if total is not None and total < cfg.warmup_steps and main:
        log.warning(
            "training for %d steps, fewer than its %d warmup steps: the learning rate never reaches its peak "
            "(warm up for fewer steps)",
            total,
            cfg.warmup_steps,
        )
