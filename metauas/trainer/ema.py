"""An exponential moving average of the weights (`train --ema DECAY`).

Why: the weights a short run ends on are one point of a noisy walk, and which point
moves real-defect quality by more than the prompt does (docs/quality.md, training
seeds). An average over the last steps is a steadier point. When it is on, the average
is the model: it is what validation scores, what best.pt, last.pt and model.safetensors
hold as their weights, so evaluate, predict and export use it with no option of their
own. The optimiser keeps stepping the raw weights, which last.pt keeps beside its
training state for `--resume`.

timm's `ModelEmaV3` does the averaging (parameters and BatchNorm statistics, in place).
Its decay warms up as 1 - (1 + step)^(-3/4), capped at DECAY: about 0.97 at step 100
and 0.99 at step 450, so the random first weights fade out even in a run of a few
hundred steps, and a long run reaches DECAY (0.999 at about 10 000 steps).
"""

from __future__ import annotations

from pathlib import Path

import torch

from metauas.model.checkpoint import load_weights
from metauas.model.network import MetaUAS

WARMUP_POWER = 3 / 4  # timm's advice for runs of up to ~100k steps
RAW = "raw_weights"  # last.pt's training-state entry holding the optimiser's own weights


def build_ema(model: MetaUAS, decay: float, payload: dict | None, ckpt: Path):
    """The average (None when `decay` is 0). On resume, `payload["model"]` is the
    average and `payload["training"][RAW]` the raw weights: the model gets the raw ones
    (the optimiser's state belongs to them), the average its own."""
    raw = None if payload is None else payload["training"].get(RAW)
    if raw is not None:  # even with --ema 0 now: the optimiser's state belongs to these
        load_weights(model, raw, ckpt)
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=WARMUP_POWER)
    if payload is not None:  # the average the run had (a run saved before --ema: its weights)
        load_weights(ema.module, payload["model"], ckpt)
    return ema


def fold_in(ema, model: MetaUAS, step: int) -> None:
    """Fold the weights after optimiser step `step` (1-based) into the average."""
    if ema is not None:
        ema.update(model, step=step)


def raw_state(ema, model: MetaUAS) -> dict[str, dict[str, torch.Tensor]]:
    """What last.pt adds to its training state so a resumed run steps the raw weights."""
    return {} if ema is None else {RAW: model.state_dict()}
