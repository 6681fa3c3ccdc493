"""One training run, as the typed config the CLI, config.json and `--config` share.

torch-free, so `metauas train --help` and `--config` checks need no model stack.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from metauas.configs import Panel, from_dict, int_list, ints_text, one_or_many, option, to_dict
from metauas.devices import CHOICES as DEVICES
from metauas.errors import UserError
from metauas.model.config import ModelConfig, check_side
from metauas.trainer.augment import AugmentConfig

Amp = Literal["auto", "bf16", "fp16", "off"]  # mixed precision on CUDA (the CPU trains in fp32)
AMPS: tuple[Amp, ...] = typing.get_args(Amp)
AugmentOn = Literal["auto", "workers", "device"]  # where warps and colour jitter run
AUGMENT_ON: tuple[AugmentOn, ...] = typing.get_args(AugmentOn)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Length: `steps`, or `epochs` over the training shards, and/or
    a wall-clock budget `max_minutes` (training stops at whichever comes first)."""

    train: str | tuple[str, ...] = option(
        help="Training shards: folder, file, brace pattern, glob, pipe: or http(s):// / s3:// URL.",
        panel=Panel.DATA,
        kind=str,
        required="unless-config",
    )
    out: str = option(
        help="Run directory: checkpoints, config.json, metrics.jsonl, TensorBoard logs.",
        panel=Panel.OUTPUT,
        required="unless-config",
    )
    val: str | tuple[str, ...] | None = option(
        None,
        "Validation, repeatable: held-out shards (pixel AUROC/AP on the first --val-pairs) and/or folders of real "
        "defects in MVTec layout (I-AUROC, P-AUROC, P-AP, P-AUPRO as `evaluate --method model`; best.pt then "
        "follows their P-AP).",
        Panel.VALIDATION,
        kind=list[str],
        parse=one_or_many,
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    size: int = option(256, "Training input side in px (pairs are resized to it).", Panel.DATA)
    batch_size: int = option(8, "Pairs per step per process.", Panel.OPTIMISATION)
    # when set, the batch over all processes: each takes global_batch_size / WORLD_SIZE
    # (resolved into batch_size when training starts; not divisible is an error)
    global_batch_size: int | None = option(
        None,
        "Pairs per step over all processes, split over WORLD_SIZE (instead of --batch-size; the paper: 128).",
        Panel.DEVICE,
    )
    steps: int | None = option(
        None, "Optimiser steps in total (resumed runs count the saved ones).", Panel.OPTIMISATION
    )
    epochs: float | None = option(
        None, "Passes over the training shards (instead of --steps; local shards).", Panel.OPTIMISATION
    )
    max_minutes: float | None = option(
        None, "Wall-clock budget; stops at this or --steps, whichever first.", Panel.OPTIMISATION, names=("--minutes",)
    )
    lr: float = option(1e-4, "AdamW peak learning rate.", Panel.OPTIMISATION)
    weight_decay: float = option(5e-4, "AdamW weight decay.", Panel.OPTIMISATION)
    warmup_steps: int = option(
        100, "Linear warmup steps before the cosine decay.", Panel.OPTIMISATION, names=("--warmup",)
    )
    ema: float = option(  # trainer/ema.py
        0.0,
        "Keep an exponential moving average of the weights with this decay (e.g. 0.999; its warmup 1 - "
        "(1 + step)^-3/4 caps it in short runs) and validate, save and export the average; 0 = off.",
        Panel.OPTIMISATION,
    )
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    dice_weight: float = option(  # loss = BCE + dice_weight * soft Dice
        0.0, "Weight of a soft Dice term added to BCE (0 = BCE only).", Panel.OPTIMISATION, names=("--dice",)
    )
    lookup_weight: float = option(  # + lookup_weight * (L_query + 0.1 L_CQC), see lookup_losses
        0.0,
        "Weight of DictAS's lookup losses (L_query + 0.1 L_CQC, on the change masks) added to BCE (0 = off).",
        Panel.OPTIMISATION,
    )
    consistency: float = option(  # + consistency * (mean |p - p'| + consistency_max * mean |max p - max p'|)
        0.0,
        "Weight of a consistency loss: each query is also shot a second time (stored again at 0.7-1x and "
        "with up to 3 grey levels of noise) and the two maps and their maxima must agree (0 = off; doubles "
        "the queries' work per step: each query runs twice, beside its prompt encoded once).",
        Panel.OPTIMISATION,
    )
    consistency_max: float = option(  # losses.consistency_loss
        1.0,
        "Weight of the consistency loss's term on the two maps' maxima (the image scores), against its term "
        "on the maps (0 = the maps only, which leaves the maxima free of a ceiling they could meet at).",
        Panel.OPTIMISATION,
    )
    cqc_margin: float = option(  # CQC hinge margin, in 1 - cos units (0..2)
        0.1,
        "CQC hinge margin: changed positions' 1-cos lookup distance must exceed unchanged ones' by this.",
        Panel.OPTIMISATION,
    )
    amp: Amp = option(
        "auto",
        "Mixed precision on CUDA: auto (bf16, else fp16) | bf16 | fp16 | off. The CPU trains in fp32.",
        Panel.DEVICE,
    )
    compile: bool = option(False, "torch.compile the model.", Panel.DEVICE, names=("--compile/--no-compile",))
    workers: int = option(2, "Data loader processes per training process.", Panel.DEVICE)
    shuffle_buffer: int = option(1000, "Samples held for shuffling.", Panel.DATA)
    resampled: bool = option(  # forced on under >1 process or with fewer shards than readers
        False,
        "Draw shards with replacement (always on with >1 process).",
        Panel.DATA,
        names=("--resampled/--no-resampled",),
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # where warps and jitter run: workers (OpenCV, per pair) | device (batched torch ops on
    # the training device; workers only decode) | auto (device on CUDA, workers on CPU)
    augment_on: AugmentOn = option(
        "auto",
        "Where warps and colour jitter run: workers (OpenCV, per pair) | device (batched on the training device; "
        "workers only decode) | auto (device on CUDA).",
        Panel.AUGMENT,
    )
    val_every: int = option(500, "Validate every N steps (and at the start and end).", Panel.VALIDATION)
    val_pairs: int = option(256, "Validation pairs used (the first N of --val).", Panel.VALIDATION)
    # --val folders in MVTec layout (real defects) are scored as `evaluate --method model`
    # does, at this size, with random 1-shot prompts for these seeds
    val_size: int = option(
        256, "Scoring size (px) of --val folders of real defects (the protocol's 256).", Panel.VALIDATION
    )
    val_seeds: tuple[int, ...] = option(
        (1,),
        "Prompt seeds of --val folders: one random normal prompt per class and seed (more: steadier, slower).",
        Panel.VALIDATION,
        kind=str,
        parse=int_list,
        text=ints_text,
    )
    save_every: int = option(500, "Save the resumable checkpoint every N steps.", Panel.OUTPUT)
    log_every: int = option(10, "Write a metrics row every N steps.", Panel.OUTPUT)
    seed: int = option(0, "Seed for initialisation, shard order and augmentation.", Panel.OPTIMISATION)
    resume: bool = option(False, "Continue OUT/last.pt (model, optimiser, schedule, step, RNG).", Panel.OUTPUT)
    progress: bool = option(True, "Show a progress bar on stderr.", Panel.OUTPUT, names=("--progress/--no-progress",))
    device: str = option("auto", f"{DEVICES} (under torchrun: auto or cuda).", Panel.DEVICE)  # auto | cpu | cuda

    def __post_init__(self) -> None:
        """Reject impossible settings up front, not an hour into a run."""
        positive = {
            "`size`": self.size,
            "`batch_size`": self.batch_size,
            "`val_every`": self.val_every,
            "`val_pairs`": self.val_pairs,
            "`val_size`": self.val_size,
            "`save_every`": self.save_every,
            "`log_every`": self.log_every,
            "`lr`": self.lr,
            "`steps`": self.steps,
            "`epochs`": self.epochs,
            "`max_minutes`": self.max_minutes,
            "`global_batch_size`": self.global_batch_size,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise UserError(f"{name} must be positive, got {value}")
        for name, value in {
            "`weight_decay`": self.weight_decay,
            "`warmup_steps`": self.warmup_steps,
            "`dice_weight`": self.dice_weight,
            "`workers`": self.workers,
            "`lookup_weight`": self.lookup_weight,
            "`cqc_margin`": self.cqc_margin,
            "`consistency`": self.consistency,
            "`consistency_max`": self.consistency_max,
            "`shuffle_buffer`": self.shuffle_buffer,
        }.items():
            if value < 0:
                raise UserError(f"{name} must not be negative, got {value}")
        if not 0 <= self.ema < 1:
            raise UserError(f"`ema` is a decay in [0, 1) (0 = off), got {self.ema}")
        if not self.val_seeds or min(self.val_seeds) < 0:
            raise UserError(f"`val_seeds` must be non-negative integers, got {list(self.val_seeds)}")
        check_side(self.size, "`size`")
        check_side(self.val_size, "`val_size`")
        if self.augment_on not in AUGMENT_ON:
            raise UserError(f"unknown `augment_on` {self.augment_on!r}: use auto|workers|device")
        if self.amp not in AMPS:
            raise UserError(f"unknown `amp` {self.amp!r}: use auto|bf16|fp16|off")
        if self.lookup_weight > 0 and self.model.alignment == "none":
            raise UserError("`lookup_weight` needs a lookup to train: use an alignment other than none")

    def per_process(self, world: int) -> TrainConfig:
        """This config with `batch_size` resolved for `world` processes (a global batch
        is split evenly; a per-process batch stays as it is)."""
        if self.global_batch_size is None:
            return self
        if self.global_batch_size % world:
            raise UserError(
                f"`global_batch_size` {self.global_batch_size} does not split over {world} processes "
                f"(WORLD_SIZE): use a multiple of {world}, or `batch_size` per process"
            )
        return dataclasses.replace(self, batch_size=self.global_batch_size // world)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "training config") -> TrainConfig:
        return from_dict(cls, data, where)
