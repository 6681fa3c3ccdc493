"""Configs of the inference room, torch-free so the CLI reads its defaults from them.

`LookupConfig` is the training-free baseline's recipe (`lookup.py`), `PredictConfig` one
`metauas predict` run (`predict.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metauas.errors import UserError

SHOT_FUSIONS = ("features", "joint", "mean", "max")
MODES = ("random", "best", "pool")  # how prompts are chosen (prompts.py)
METHODS = ("model", "lookup", "mix")  # the scoring registry's names (scoring.py)
METHOD_SETS = {"both": ("model", "lookup"), "all": METHODS}
METHOD_CHOICES = (*METHODS, *METHOD_SETS)


@dataclass(frozen=True)
class LookupConfig:
    stages: tuple[int, ...] = (2, 3)  # encoder stages used (mid-level)
    neighbourhood: int = 3  # local average pooling window (patch context)
    sigma: float = 4.0  # Gaussian smoothing of the upsampled map, pixels; 0 = none


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
