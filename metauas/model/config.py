"""What decides a MetaUAS model's shapes and behaviour, torch-free.

The CLI reads its option defaults from these dataclasses and checkpoints store them as
JSON, so they live apart from the torch code that builds the model (`encoder.py`,
`network.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from metauas.configs import from_dict, to_dict
from metauas.errors import UserError

# The sides a model's input may have (train --size, --val-size, predict and evaluate
# --size, a checkpoint's meta.size): the encoder downsamples 32x, and past 4096 px one
# image's features alone are gigabytes; OpenCV and torch would fail on it mid-run.
MIN_SIDE, MAX_SIDE = 32, 4096


def check_side(size: object, option: str) -> None:
    """A UserError unless `size` is a whole number in [MIN_SIDE, MAX_SIDE]."""
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIDE <= size <= MAX_SIDE:
        raise UserError(f"{option} must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}, got {size!r}")


ALIGNMENTS = ("soft", "hard", "none", "sparsemax", "topk")
HARD_SIMILARITIES = ("cosine", "dot")
# fusion = "+"-joined parts, each a function of (query, aligned prompt) and its channel count
FUSIONS = ("cat", "add", "absdiff", "cat+absdiff", "cat+cos", "cat+absdiff+cos")


def _whole(value, least: int, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


@dataclass(frozen=True)
class EncoderConfig:
    """Which backbone, which weights, which five feature stages."""

    name: str = "tf_efficientnet_lite0"
    weights: str = "auto"  # auto | offline | timm | none | path to a state dict file
    layout: str = "features"  # features (timm features_only) | official (MetaUAS b4)
    # 0: "same" padding from the actual input (timm); N: as for an N px input, fixed (lukemelas)
    static_pad_size: int = 0


# Encoder names that stand for several fields at once. `official` is the encoder of the
# authors' checkpoint as `import-official` builds it: the TF-ported b4 (timm's name for
# its AutoAugment ImageNet weights, the ones smp/lukemelas load), smp's stage layout and
# TF "same" padding fixed for 380 px (docs/model.md).
ENCODER_ALIASES = {"official": {"name": "tf_efficientnet_b4.aa_in1k", "layout": "official", "static_pad_size": 380}}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the model's shapes and behaviour; saved in checkpoints.

    Fields added later have defaults that reproduce the earlier model, so `from_dict`
    loads older checkpoints unchanged; where today's default differs from what older
    models did, `LEGACY` gives the old value to stored configs that lack the field.
    """

    # hard alignment picked by raw dot product before cosine (Eq. 3) became the default;
    # models saved before the discrepancy channels had none
    LEGACY: ClassVar[dict[str, Any]] = {"hard_similarity": "dot", "discrepancy_stages": ()}

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    alignment: str = "soft"  # soft | hard | none | sparsemax | topk (normaliser over prompt positions)
    # decoder input per aligned stage; cat+absdiff+cos won the ablation (docs/ablations.md),
    # plain cat is the paper's
    fusion: str = "cat+absdiff+cos"  # one of FUSIONS: cat | add | absdiff | cat+absdiff | cat+cos | cat+absdiff+cos
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 48)
    attention: str = "scse"  # scse | none (decoder block attention)
    aligned_stages: int = 3  # how many of the deepest stages are aligned and fused
    scale_similarity: bool = False  # divide query·prompt similarity by sqrt(channels)
    topk: int = 8  # `topk` alignment: softmax over this many most similar prompt positions
    learn_temperature: bool = False  # a learnable similarity temperature per aligned stage
    # `hard` alignment's choice of prompt position: cosine of the projected features (the
    # paper's Eq. 3) or their raw dot product (models saved before this field existed)
    hard_similarity: str = "cosine"
    # Prompt-query discrepancy beside the learned alignment (docs/quality.md, "Model variants"):
    # for each listed encoder stage (0 = the finest, stride 2 on lite0) one more decoder input
    # channel, 1 - the highest cosine similarity of the query position's frozen feature to ANY
    # prompt position (PatchCore's one-image lookup, no learning). () = off, the paper's model;
    # (0, 1, 2, 3) won on both real dev classes (docs/quality.md, "Model variants")
    discrepancy_stages: tuple[int, ...] = (0, 1, 2, 3)
    discrepancy_pool: int = 1  # k x k average pooling of both images' features before the cosine
    # > 0: logits += gain * (mean of the discrepancy maps, upsampled to the input), with the
    # gain a learned scalar starting at this value: the model starts from the lookup's ranking
    # and learns a correction (needs discrepancy_stages). 0 = off.
    lookup_residual: float = 0.0

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise UserError(f"unknown alignment {self.alignment!r}: use {'|'.join(ALIGNMENTS)}")
        if self.hard_similarity not in HARD_SIMILARITIES:
            raise UserError(f"unknown hard similarity {self.hard_similarity!r}: use {'|'.join(HARD_SIMILARITIES)}")
        if self.fusion not in FUSIONS:
            raise UserError(f"unknown fusion {self.fusion!r}: use {'|'.join(FUSIONS)}")
        if self.attention not in ("scse", "none"):
            raise UserError(f"unknown decoder attention {self.attention!r}: use scse|none")
        if not (
            isinstance(self.decoder_channels, (tuple, list))
            and len(self.decoder_channels) == 5
            and all(_whole(c, 1, 4096) for c in self.decoder_channels)
        ):
            raise UserError(
                "decoder channels must be five whole numbers of 1..4096 (one per encoder stage), "
                f"got {self.decoder_channels!r}"
            )
        if not _whole(self.aligned_stages, 1, 5) or not isinstance(self.encoder, EncoderConfig):
            raise UserError(f"aligned stages must be 1..5, got {self.aligned_stages!r}")
        if not isinstance(self.encoder.name, str) or not _whole(self.encoder.static_pad_size, 0, 8192):
            raise UserError(f"encoder name must be text and static_pad_size 0..8192, got {self.encoder!r}")
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise UserError(f"--topk must be a positive whole number, got {self.topk}")
        stages = self.discrepancy_stages
        if not all(_whole(x, 0, 4) for x in stages) or len(set(stages)) != len(stages):
            raise UserError(f"--discrepancy-stages takes distinct encoder stages 0..4, got {list(stages)}")
        if not _whole(self.discrepancy_pool, 1, 99) or self.discrepancy_pool % 2 == 0:
            raise UserError(f"--discrepancy-pool must be an odd positive whole number, got {self.discrepancy_pool}")
        if self.lookup_residual < 0 or (self.lookup_residual > 0 and not stages):
            raise UserError("--lookup-residual must be >= 0 and needs --discrepancy-stages")

    @classmethod
    def from_dict(cls, data: dict, where: str = "model config") -> ModelConfig:
        """Rebuild from `to_dict` (e.g. a checkpoint's JSON metadata); unknown keys are an error."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return to_dict(self)
