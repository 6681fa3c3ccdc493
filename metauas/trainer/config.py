"""One training run, as the typed config the CLI, config.json and `--config` share.

torch-free, so `metauas train --help` and `--config` checks need no model stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from metauas.configs import from_dict, to_dict
from metauas.errors import UserError
from metauas.model.config import ModelConfig, check_side
from metauas.trainer.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Length: `steps`, or `epochs` over the training shards, and/or
    a wall-clock budget `max_minutes` (training stops at whichever comes first)."""

    train: str | tuple[str, ...]
    out: str
    val: str | tuple[str, ...] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    size: int = 256
    batch_size: int = 8  # per process
    # when set, the batch over all processes: each takes global_batch_size / WORLD_SIZE
    # (resolved into batch_size when training starts; not divisible is an error)
    global_batch_size: int | None = None
    steps: int | None = None
    epochs: float | None = None
    max_minutes: float | None = None
    lr: float = 1e-4
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    dice_weight: float = 0.0  # loss = BCE + dice_weight * soft Dice
    lookup_weight: float = 0.0  # + lookup_weight * (L_query + 0.1 L_CQC), see lookup_losses
    cqc_margin: float = 0.1  # CQC hinge margin, in 1 - cos units (0..2)
    amp: str = "auto"  # auto (bf16, else fp16, on CUDA; off on CPU) | bf16 | fp16 | off
    compile: bool = False
    workers: int = 2  # DataLoader processes per training process
    shuffle_buffer: int = 1000
    resampled: bool = False  # forced on under >1 process or with fewer shards than readers
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # where warps and jitter run: workers (OpenCV, per pair) | device (batched torch ops on
    # the training device; workers only decode) | auto (device on CUDA, workers on CPU)
    augment_on: str = "auto"
    val_every: int = 500
    val_pairs: int = 256  # the first N pairs of --val shards
    # --val folders in MVTec layout (real defects) are scored as `evaluate --method model`
    # does, at this size, with random 1-shot prompts for these seeds
    val_size: int = 256
    val_seeds: tuple[int, ...] = (1,)
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    progress: bool = True
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        """Reject impossible settings up front, not an hour into a run."""
        positive = {
            "--size": self.size,
            "--batch-size": self.batch_size,
            "--val-every": self.val_every,
            "--val-pairs": self.val_pairs,
            "--val-size": self.val_size,
            "--save-every": self.save_every,
            "--log-every": self.log_every,
            "--lr": self.lr,
            "--steps": self.steps,
            "--epochs": self.epochs,
            "--minutes": self.max_minutes,
            "--global-batch-size": self.global_batch_size,
        }
        for option, value in positive.items():
            if value is not None and value <= 0:
                raise UserError(f"{option} must be positive, got {value}")
        for option, value in {
            "--weight-decay": self.weight_decay,
            "--warmup": self.warmup_steps,
            "--dice": self.dice_weight,
            "--workers": self.workers,
            "--lookup-weight": self.lookup_weight,
            "--cqc-margin": self.cqc_margin,
            "--shuffle-buffer": self.shuffle_buffer,
        }.items():
            if value < 0:
                raise UserError(f"{option} must not be negative, got {value}")
        if not self.val_seeds or min(self.val_seeds) < 0:
            raise UserError(f"--val-seeds must be non-negative integers, got {list(self.val_seeds)}")
        check_side(self.size, "--size")
        check_side(self.val_size, "--val-size")
        if self.augment_on not in ("auto", "workers", "device"):
            raise UserError(f"unknown --augment-on {self.augment_on!r}: use auto|workers|device")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise UserError(f"unknown --amp {self.amp!r}: use auto|bf16|fp16|off")
        if self.lookup_weight > 0 and self.model.alignment == "none":
            raise UserError("--lookup-weight needs a lookup to train: use an alignment other than none")

    def per_process(self, world: int) -> TrainConfig:
        """This config with `batch_size` resolved for `world` processes (a global batch
        is split evenly; a per-process batch stays as it is)."""
        if self.global_batch_size is None:
            return self
        if self.global_batch_size % world:
            raise UserError(
                f"--global-batch-size {self.global_batch_size} does not split over {world} processes "
                f"(WORLD_SIZE): use a multiple of {world}, or --batch-size per process"
            )
        return dataclasses.replace(self, batch_size=self.global_batch_size // world)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "training config") -> TrainConfig:
        return from_dict(cls, data, where)
