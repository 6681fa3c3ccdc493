"""Configs of the inference room, torch-free so the CLI reads its defaults from them.

`LookupConfig` is the training-free baseline's recipe (`lookup.py`), `PredictConfig` one
`metauas predict` run (`predict.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metauas.errors import UserError
from metauas.model.config import check_side

SHOT_FUSIONS = ("features", "joint", "mean", "max")
NORMALISE = ("none", "prompt", "query")  # LookupConfig.normalise
AGGREGATE = ("mean", "max", "geomean")  # LookupConfig.aggregate
UPSAMPLE = ("finest", "image")  # LookupConfig.upsample
MODES = ("random", "best", "pool")  # how prompts are chosen (prompts.py)
METHODS = ("model", "lookup", "mix")  # the scoring registry's names (scoring.py)
METHOD_SETS = {"both": ("model", "lookup"), "all": METHODS}
METHOD_CHOICES = (*METHODS, *METHOD_SETS)


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
    # Gaussian smoothing of the upsampled map, pixels; 0 = none. 0..4 were within a point
    # of each other; 4 keeps maps smooth, 8 cost small defects
    sigma: float = 4.0
    # per-stage distance scale, so that stages with larger typical distances do not dominate:
    # none | prompt (a quantile of the prompt's distances to itself outside a window around
    # each patch: the distance a normal patch gets, known before any query) | query (the
    # median of the query's own map). Scaled maps are mapped to [0, 1) by r / (1 + r).
    # none: the raw scales carry signal (the deeper stage's larger distances); prompt
    # scales lost up to 5 P-AP, query medians broke image scores (a defect-free query
    # is stretched like a defective one)
    normalise: str = "none"
    # prompt normalisation: a patch's neighbours within this many positions (per stage
    # grid) are not counted as its matches (they overlap it), and the quantile taken
    exclude: int = 2
    quantile: float = 0.5
    # how stage maps combine: mean | max (any stage finding it) | geomean (all stages must
    # agree: fewer false alarms, fewer faint defects; with stage 4 it traded P-AUPRO for P-AP)
    aggregate: str = "mean"
    # where stage maps combine: at the finest stage's grid (then one upsampling) | at image
    # size (within 0.2 of each other; finest is cheaper)
    upsample: str = "finest"

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
        if self.sigma < 0 or self.exclude < 0 or not 0 < self.quantile <= 1:
            raise UserError("lookup sigma and exclude must be >= 0 and quantile in (0, 1]")

    def windows(self) -> tuple[int, ...]:
        """The pooling window of each stage in `stages`."""
        k = self.neighbourhood
        return tuple(k) if isinstance(k, (tuple, list)) else (k,) * len(self.stages)


MAP_FORMATS = ("png16", "npy")


@dataclass(frozen=True)
class PredictConfig:
    """One `metauas predict` run (see predict.py)."""

    query: Path
    out: Path
    checkpoint: Path | None = None
    prompts: tuple[Path, ...] = ()
    prompt_dir: Path | None = None
    method: str = "model"  # model | lookup | mix
    use_all_prompts: bool = False  # K-shot with every prompt instead of the closest one
    shot_fusion: str = "features"
    size: int | None = None  # None: the checkpoint's training size, else 256
    map_format: str = "png16"
    batch_size: int = 8
    overlay_side: int = 768  # longest side of overlay tiles
    device: str = "auto"
    compile: bool = False  # torch.compile the model (see inference/prepared.py)
    progress: bool = True
    # decisions: "auto" (fitted from normal images, see api.Segmenter.fit_threshold), a
    # number in [0, 1], or None (maps and scores only)
    threshold: str | None = None
    normals: Path | None = None  # folder of normal images for --threshold auto (else the prompts)
    recursive: bool = False  # query, prompt and normals folders: subfolders too

    def __post_init__(self) -> None:
        if self.map_format not in MAP_FORMATS:
            raise UserError(f"unknown map format {self.map_format!r}: use {'|'.join(MAP_FORMATS)}")
        if self.threshold is not None and self.threshold != "auto":
            try:
                value = float(self.threshold)
            except ValueError:
                value = -1.0
            if not 0.0 <= value <= 1.0:
                raise UserError(f"--threshold takes auto or a number in [0, 1], got {self.threshold!r}")
        if self.normals is not None and self.threshold != "auto":
            raise UserError("--normals is for --threshold auto")
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.size is not None:
            check_side(self.size, "--size")
