"""The typed config of `metauas evaluate`, torch-free: the CLI reads its defaults here,
metrics.json stores it, and `evaluate --config metrics.json` rebuilds it."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metauas.configs import Panel, comma_list, from_dict, int_list, ints_text, option, to_dict
from metauas.devices import CHOICES as DEVICES
from metauas.errors import UserError
from metauas.evaluation.metrics import IMAGE_SCORES, PROTOCOLS, MetricConfig
from metauas.evaluation.readers import FORMATS, BenchmarkFormat
from metauas.inference.config import (
    COMPILE_HELP,
    METHOD_CHOICES,
    MIX_RULE,
    MIX_WEIGHT,
    SHOT_FUSIONS,
    LookupConfig,
    MethodChoice,
    ShotFusion,
)
from metauas.inference.policy import MODES, PromptMode
from metauas.model.config import check_side

OverlayScale = Literal["shared", "per-map"]  # the overlays' heatmap colours
OVERLAY_SCALES: tuple[OverlayScale, ...] = typing.get_args(OverlayScale)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: which data, which model(s), which prompts, which protocol.

    Checked when made (a bad --config file fails before any image is read); the
    checkpoint-dependent parts (size, model methods) are checked by `evaluate`."""

    data: Path = option(
        help="Benchmark root folder (or meta.json for --format meta, split_csv/1cls.csv for --format visa).",
        panel=Panel.DATA,
        required="unless-config",
    )
    fmt: BenchmarkFormat = option(
        "mvtec",
        "Benchmark layout: mvtec (also GoodsAD) | visa (raw download or prepare_data.py's folder, detected) | meta "
        "| folder (docs/evaluation.md).",
        Panel.DATA,
        names=("--format",),
    )
    out: Path = option(  # the CLI asks for it (a --config file's own folder is not reused)
        Path("eval-out"),
        "Output folder: metrics.json/.csv/.md, report.html and overlays/.",
        Panel.OUTPUT,
        required="always",
    )
    checkpoint: Path | None = option(None, "Trained checkpoint (.pt); not needed for --method lookup.", Panel.MODEL)
    method: MethodChoice = option(
        "all",
        "model | lookup (training-free baseline) | mix (blend of both maps, see --mix-weight) | both (model and "
        "lookup) | all (model, lookup, mix; from one encoder pass).",
        Panel.MODEL,
    )
    prompt_mode: PromptMode = option(
        "random", "random (per seed) | best (closest normal image per query) | pool (class-agnostic).", Panel.PROMPTS
    )
    shots: int = option(1, "Normal prompts per query (K-shot).", Panel.PROMPTS)
    shot_fusion: ShotFusion = option(
        "features",
        "K-shot model: features (average aligned prompt features) | joint (align against one dictionary of all K "
        "prompts' positions, DictAS) | mean | max of per-prompt maps.",
        Panel.PROMPTS,
    )
    prompt_rotations: tuple[int, ...] = option(  # each prompt also seen rotated by these degrees
        (0,),
        "Also use each prompt rotated by these degrees (multiples of 90, comma-separated, e.g. 0,90,180,270) as "
        "extra shots, fused by --shot-fusion: for rotation-variant parts.",
        Panel.PROMPTS,
        kind=str,
        parse=int_list,
        text=ints_text,
    )
    mix_weight: float = option(  # the lookup map's weight in the `mix` method
        MIX_WEIGHT,
        f"--method mix: map = {MIX_RULE} (a fixed weight; no test-set normalisation).",
        Panel.MODEL,
    )
    seeds: tuple[int, ...] = option(  # the paper's five
        (1, 3, 5, 7, 9),
        "Comma-separated prompt seeds for --prompt-mode random|pool (the paper's five by default); mean ± std over "
        "them. Use one seed for a quick run.",
        Panel.PROMPTS,
        kind=str,
        parse=int_list,
        text=ints_text,
    )
    size: int | None = option(  # None: the checkpoint's training size, else 256
        None, "Evaluation size in pixels (default: the checkpoint's training size, else 256).", Panel.DATA
    )
    classes: tuple[str, ...] = option(
        (), "Only these classes (repeat or comma-separate).", Panel.DATA, kind=list[str], parse=comma_list
    )
    prompts_file: Path | None = option(
        None,
        "JSON of class -> prompt image(s) (optionally per seed) to replay exactly.",
        Panel.PROMPTS,
        names=("--prompts",),
    )
    metric: MetricConfig = field(default_factory=MetricConfig)
    lookup: LookupConfig = field(default_factory=LookupConfig)
    batch_size: int = option(8, "Queries per forward pass.", Panel.DEVICE)
    overlays: int = option(  # best and worst anomalous queries per class and method (first run)
        2, "Best and worst anomalous queries drawn per class and method (0 = none).", Panel.OUTPUT
    )
    # heatmap colour scale of the overlays: shared (model maps over [0, 1], other methods
    # over the class's maximum: strips comparable) | per-map (each over its own maximum:
    # a faint map's shape visible)
    overlay_scale: OverlayScale = option(
        "shared",
        "Heatmap colours of the overlays: shared (model over [0, 1], lookup over the class maximum; strips "
        "comparable) | per-map (each over its own maximum).",
        Panel.OUTPUT,
    )
    # normal training images (other than the prompts) a decision threshold is fitted on per
    # class and run, as `predict --threshold auto` fits it; its F1 is reported beside F1max.
    # 0 = off; only with fixed prompts (random seeds, prompt files) and the exact protocol
    fit_normals: int = option(
        8,
        "Normal training images (besides the prompts) a decision threshold is fitted on per class, as predict "
        "--threshold auto does; its image/pixel F1 is reported beside F1max (0 = off).",
        Panel.METRICS,
    )
    device: str = option("auto", DEVICES, Panel.DEVICE)
    compile: bool = option(False, COMPILE_HELP, Panel.DEVICE)  # see inference/prepared.py
    progress: bool = option(True, "Show a progress bar on stderr.", Panel.OUTPUT, names=("--progress/--no-progress",))

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
            (self.metric.topk >= 1, f"`metric.topk` must be at least 1, got {self.metric.topk}"),
            (self.shots >= 1, "`shots` must be at least 1"),
            (
                bool(self.seeds) and min(self.seeds) >= 0,
                f"`seeds` must be non-negative integers, got {list(self.seeds)}",
            ),
            (0.0 <= self.mix_weight <= 1.0, f"`mix_weight` must be in [0, 1], got {self.mix_weight}"),
            (self.batch_size >= 1, "`batch_size` must be at least 1"),
            (self.overlays >= 0, "`overlays` must not be negative"),
            (
                self.overlay_scale in OVERLAY_SCALES,
                f"unknown `overlay_scale` {self.overlay_scale!r}: use shared|per-map",
            ),
            (self.fit_normals >= 0, "`fit_normals` must not be negative"),
            (
                bool(self.prompt_rotations) and all(r % 90 == 0 for r in self.prompt_rotations),
                f"`prompt_rotations` takes multiples of 90 degrees, got {list(self.prompt_rotations)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.size is not None:
            check_side(self.size, "`size`")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "evaluation config") -> EvalConfig:
        return from_dict(cls, data, where)
