"""Configs of the inference room, torch-free so the CLI reads its defaults from them.

`LookupConfig` is the training-free baseline's recipe (`lookup.py`), `PredictConfig` one
`metauas predict` run (`predict.py`); prompt modes are the policy's (`policy.py`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from metauas.configs import Panel, as_tuple, option
from metauas.devices import CHOICES as DEVICES
from metauas.errors import UserError
from metauas.model.config import check_side

COMPILE_HELP = (
    "torch.compile encoder and decoder (inductor, frozen weights): faster per image after a compilation of about "
    "a minute per input shape on 2 CPU cores; for long runs. Needs a C++ compiler on CPU."
)

# each choice is a Literal alias (for type checkers and the CLI's choices) and its tuple
ShotFusion = Literal["features", "joint", "mean", "max"]  # how K prompts combine (scoring.Scorer)
SHOT_FUSIONS: tuple[ShotFusion, ...] = typing.get_args(ShotFusion)
Normalise = Literal["none", "prompt", "query"]  # LookupConfig.normalise
NORMALISE: tuple[Normalise, ...] = typing.get_args(Normalise)
Aggregate = Literal["mean", "max", "geomean"]  # LookupConfig.aggregate
AGGREGATE: tuple[Aggregate, ...] = typing.get_args(Aggregate)
Upsample = Literal["finest", "image"]  # LookupConfig.upsample
UPSAMPLE: tuple[Upsample, ...] = typing.get_args(Upsample)
Method = Literal["model", "lookup", "mix"]  # the scoring registry's names (scoring.py)
METHODS: tuple[Method, ...] = typing.get_args(Method)
MethodChoice = Literal["model", "lookup", "mix", "both", "all"]  # a method, or a set of them
METHOD_SETS: dict[str, tuple[Method, ...]] = {"both": ("model", "lookup"), "all": METHODS}
METHOD_CHOICES: tuple[MethodChoice, ...] = typing.get_args(MethodChoice)
# the `mix` method: the weighted geometric mean of the two maps (scoring._mix), high only
# where both are, so the lookup vetoes the model's confident nuisance and the model the
# lookup's; it beat the arithmetic blend on the dev suite (docs/quality.md)
MIX_WEIGHT = 0.85  # the lookup map's weight w (docs/quality.md, "The default weight")
DEFAULT_METHOD: Method = "mix"  # what a checkpoint computes unless a method is named
LOOKUP_ENCODER = "tf_efficientnet_lite2"  # LookupConfig.encoder's default (see there)
LOOKUP_ENCODER_HELP = (
    "With --method lookup or mix: the lookup's frozen encoder (a timm name with offline weights), or `model`: "
    "the checkpoint's own (lite0 without one), one encoder pass for mix instead of two."
)
SHARED_ENCODER = "model"  # LookupConfig.encoder: the checkpoint's own encoder, one pass for both
MIX_RULE = "model ** (1 - w) * lookup ** w, a weighted geometric mean of the two maps"


@dataclass(frozen=True)
class LookupConfig:
    """How query patches are looked up in the prompt and the distances turned into a map."""

    # encoder stages used; finer stages (1 = stride 4) see small defects, coarser ones
    # context: strides 8 and 16 were best on both real sets (stride 4 added noise there,
    # stride 32 raised P-AP but cost P-AUPRO and held-out P-AP)
    stages: tuple[int, ...] = (2, 3)
    # k x k average pooling of features before the lookup (patch context; 1 = none); one
    # value for every stage or one per stage. 1: pooling blurred small defects away
    neighbourhood: int | tuple[int, ...] = 1
    # the frozen encoder whose features are looked up. lite2 (offline weights, like lite0)
    # was the strongest lookup on the dev suite's pixel metrics, and `mix` with it led
    # `mix` with the model's own lite0 on every set over three training runs, at the cost
    # of a second encoder pass (docs/quality.md, "lite2 with a 2-px blur, and the blend
    # with it"); `model` shares the checkpoint's encoder (one pass; lite0 without one)
    encoder: str = option(
        LOOKUP_ENCODER,
        "Frozen encoder of the lookup baseline (a timm name; tf_efficientnet_lite0/1/2 have offline weights), or "
        "`model`: the checkpoint's own encoder, so mix costs one encoder pass instead of two.",
        Panel.MODEL,
        names=("--lookup-encoder",),
    )
    # Gaussian smoothing of the upsampled map, pixels; 0 = none. 0..4 were within a point
    # of each other on lite0 (4 kept maps smooth, 8 cost small defects); on lite2, 2 beat 4
    # on the suite's pixel metrics
    sigma: float = option(
        2.0,
        "Gaussian smoothing (pixels) of the lookup baseline's map; 0 = none.",
        Panel.MODEL,
        names=("--lookup-sigma",),
    )
    # per-stage distance scale, so that stages with larger typical distances do not dominate:
    # none | prompt (a quantile of the prompt's distances to itself outside a window around
    # each patch: the distance a normal patch gets, known before any query) | query (the
    # median of the query's own map). Scaled maps are mapped to [0, 1) by r / (1 + r).
    # none: the raw scales carry signal (the deeper stage's larger distances); prompt
    # scales lost up to 5 P-AP, query medians broke image scores (a defect-free query
    # is stretched like a defective one)
    normalise: Normalise = "none"
    # prompt normalisation: a patch's neighbours within this many positions (per stage
    # grid) are not counted as its matches (they overlap it), and the quantile taken
    exclude: int = 2
    quantile: float = 0.5
    # how stage maps combine: mean | max (any stage finding it) | geomean (all stages must
    # agree: fewer false alarms, fewer faint defects; with stage 4 it traded P-AUPRO for P-AP)
    aggregate: Aggregate = "mean"
    # where stage maps combine: at the finest stage's grid (then one upsampling) | at image
    # size (within 0.2 of each other; finest is cheaper)
    upsample: Upsample = "finest"

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("normalise", self.normalise, NORMALISE),
            ("aggregate", self.aggregate, AGGREGATE),
            ("upsample", self.upsample, UPSAMPLE),
        ):
            if value not in choices:
                raise UserError(f"lookup {name} {value!r} unknown: use {'|'.join(choices)}")
        if not self.stages:
            raise UserError("lookup needs at least one encoder stage")
        ks = self.windows()
        if len(ks) != len(self.stages) or any(k < 1 or k % 2 == 0 for k in ks):
            raise UserError(f"lookup neighbourhood {self.neighbourhood!r}: odd sizes >= 1, one or one per stage")
        if not self.encoder.strip():
            raise UserError("lookup encoder must name a timm encoder or `model`")
        if self.sigma < 0 or self.exclude < 0 or not 0 < self.quantile <= 1:
            raise UserError("lookup sigma and exclude must be >= 0 and quantile in (0, 1]")

    def windows(self) -> tuple[int, ...]:
        """The pooling window of each stage in `stages`."""
        k = self.neighbourhood
        return tuple(k) if isinstance(k, (tuple, list)) else (k,) * len(self.stages)


MapFormat = Literal["png16", "npy"]  # 16-bit PNG (65535 = 1) | float32 .npy
MAP_FORMATS: tuple[MapFormat, ...] = typing.get_args(MapFormat)


@dataclass(frozen=True)
class PredictConfig:
    """One `metauas predict` run (see predict.py)."""

    query: Path = option(help="Query image or folder of query images.", panel=Panel.DATA, required="always")
    out: Path = option(
        help="Output folder: maps/, overlays/, predictions.jsonl.", panel=Panel.OUTPUT, required="always"
    )
    checkpoint: Path | None = option(
        None,
        "Trained checkpoint (.pt), a pretrained name (hf:csgaobb/MetaUAS/metauas-256.ckpt) or an exported graph "
        "(model.onnx, model.xml: runs without torch); not needed for --method lookup.",
        Panel.MODEL,
    )
    prompts: tuple[Path, ...] = option(
        (),
        "Normal prompt image (repeat for several).",
        Panel.PROMPTS,
        names=("--prompt",),
        kind=list[Path],
        parse=as_tuple,
    )
    prompt_dir: Path | None = option(None, "Folder of normal prompt images.", Panel.PROMPTS)
    method: Method | None = option(
        None,
        f"model | lookup (training-free baseline) | mix ({MIX_RULE}, see --mix-weight). "
        f"Default: {DEFAULT_METHOD}; an exported graph computes the method it was exported with.",
        Panel.MODEL,
    )
    mix_weight: float = option(  # the lookup map's weight in the `mix` method (a graph has its own)
        MIX_WEIGHT, "With --method mix on a checkpoint: the lookup map's weight w in [0, 1].", Panel.MODEL
    )
    lookup_encoder: str = option(LOOKUP_ENCODER, LOOKUP_ENCODER_HELP, Panel.MODEL)  # LookupConfig.encoder
    use_all_prompts: bool = option(  # K-shot with every prompt instead of the closest one
        False, "Use every prompt as K shots instead of the closest one.", Panel.PROMPTS
    )
    shot_fusion: ShotFusion = option(
        "features", "With --use-all-prompts: how K prompts combine (see evaluate -h).", Panel.PROMPTS
    )
    size: int | None = option(  # None: the checkpoint's training size, else 256
        None, "Inference size (default: the checkpoint's training size, else 256).", Panel.DATA
    )
    map_format: MapFormat = option(
        "png16", "Anomaly map files: png16 (16-bit PNG, 65535 = 1) | npy (float32).", Panel.OUTPUT
    )
    batch_size: int = option(8, "Queries per forward pass.", Panel.DEVICE)
    overlay_side: int = 768  # longest side of overlay tiles
    device: str = option("auto", DEVICES, Panel.DEVICE)
    compile: bool = option(False, COMPILE_HELP, Panel.DEVICE)  # see inference/prepared.py
    progress: bool = option(True, "Show a progress bar on stderr.", Panel.OUTPUT, names=("--progress/--no-progress",))
    # decisions: "auto" (fitted from normal images, see api.Segmenter.fit_threshold), a
    # number in [0, 1], or None (maps and scores only)
    threshold: str | None = option(
        None,
        "Also decide: auto (fitted on normal images: the highest image score among them, see docs/api.md) or a "
        "number in [0, 1]; writes masks/ and an anomalous column.",
        Panel.OUTPUT,
    )
    normals: Path | None = option(  # folder of normal images for --threshold auto (else the prompts)
        None,
        "Folder of normal images for --threshold auto (default: the prompts, each scored against the others).",
        Panel.PROMPTS,
    )
    recursive: bool = option(  # query, prompt and normals folders: subfolders too
        False,
        "Search --query, --prompt-dir and --normals folders in their subfolders too (outputs keep the subfolders).",
        Panel.DATA,
    )

    def __post_init__(self) -> None:
        if self.map_format not in MAP_FORMATS:
            raise UserError(f"unknown map format {self.map_format!r}: use {'|'.join(MAP_FORMATS)}")
        if self.threshold is not None and self.threshold != "auto":
            try:
                value = float(self.threshold)
            except ValueError:
                value = -1.0
            if not 0.0 <= value <= 1.0:
                raise UserError(f"`threshold` takes auto or a number in [0, 1], got {self.threshold!r}")
        if self.normals is not None and self.threshold != "auto":
            raise UserError("`normals` is for `threshold` auto")
        if self.batch_size < 1:
            raise UserError("`batch_size` must be at least 1")
        if self.size is not None:
            check_side(self.size, "`size`")
