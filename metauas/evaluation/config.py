"""The typed config of `metauas evaluate`, torch-free: the CLI reads its defaults here,
metrics.json stores it, and `evaluate --config metrics.json` rebuilds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metauas.configs import from_dict, to_dict
from metauas.errors import UserError
from metauas.evaluation.metrics import IMAGE_SCORES, PROTOCOLS, MetricConfig
from metauas.evaluation.readers import FORMATS
from metauas.inference.config import METHOD_CHOICES, MODES, SHOT_FUSIONS, LookupConfig
from metauas.model.config import check_side

OVERLAY_SCALES = ("shared", "per-map")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which data, which model(s), which prompts, which protocol.

    Checked when made (a bad --config file fails before any image is read); the
    checkpoint-dependent parts (size, model methods) are checked by `evaluate`."""

    data: Path
    fmt: str = "mvtec"
    out: Path = Path("eval-out")
    checkpoint: Path | None = None
    method: str = "both"  # model | lookup | mix | both (model, lookup) | all
    prompt_mode: str = "random"  # random | best | pool
    shots: int = 1
    shot_fusion: str = "features"  # features | joint | mean | max
    prompt_rotations: tuple[int, ...] = (0,)  # each prompt also seen rotated by these degrees
    mix_weight: float = 0.5  # the lookup map's weight in the `mix` method
    seeds: tuple[int, ...] = (1, 3, 5, 7, 9)  # the paper's five
    size: int | None = None  # None: the checkpoint's training size, else 256
    classes: tuple[str, ...] = ()
    prompts_file: Path | None = None
    metric: MetricConfig = field(default_factory=MetricConfig)
    lookup: LookupConfig = field(default_factory=LookupConfig)
    batch_size: int = 8
    overlays: int = 2  # best and worst anomalous queries per class and method (first run)
    # heatmap colour scale of the overlays: shared (model maps over [0, 1], other methods
    # over the class's maximum: strips comparable) | per-map (each over its own maximum:
    # a faint map's shape visible)
    overlay_scale: str = "shared"
    # normal training images (other than the prompts) a decision threshold is fitted on per
    # class and run, as `predict --threshold auto` fits it; its F1 is reported beside F1max.
    # 0 = off; only with fixed prompts (random seeds, prompt files) and the exact protocol
    fit_normals: int = 8
    device: str = "auto"
    compile: bool = False  # torch.compile the model (see inference/prepared.py)
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.prompt_mode in MODES, f"unknown prompt mode {self.prompt_mode!r}: use {'|'.join(MODES)}"),
            (self.method in METHOD_CHOICES, f"unknown method {self.method!r}: use {'|'.join(METHOD_CHOICES)}"),
            (
                self.shot_fusion in SHOT_FUSIONS,
                f"unknown shot fusion {self.shot_fusion!r}: use {'|'.join(SHOT_FUSIONS)}",
            ),
            (self.fmt in FORMATS, f"unknown format {self.fmt!r}: use {'|'.join(FORMATS)}"),
            (
                self.metric.protocol in PROTOCOLS,
                f"unknown protocol {self.metric.protocol!r}: use {'|'.join(PROTOCOLS)}",
            ),
            (self.metric.image_score in IMAGE_SCORES, f"unknown image score {self.metric.image_score!r}: use max|topk"),
            (self.metric.topk >= 1, f"--score-topk must be at least 1, got {self.metric.topk}"),
            (self.shots >= 1, "--shots must be at least 1"),
            (
                bool(self.seeds) and min(self.seeds) >= 0,
                f"--seeds must be non-negative integers, got {list(self.seeds)}",
            ),
            (0.0 <= self.mix_weight <= 1.0, f"--mix-weight must be in [0, 1], got {self.mix_weight}"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.overlays >= 0, "--overlays must not be negative"),
            (self.overlay_scale in OVERLAY_SCALES, f"unknown overlay scale {self.overlay_scale!r}: use shared|per-map"),
            (self.fit_normals >= 0, "--fit-normals must not be negative"),
            (
                bool(self.prompt_rotations) and all(r % 90 == 0 for r in self.prompt_rotations),
                f"--prompt-rotations takes multiples of 90 degrees, got {list(self.prompt_rotations)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.size is not None:
            check_side(self.size, "--size")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "evaluation config") -> EvalConfig:
        return from_dict(cls, data, where)
