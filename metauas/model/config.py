"""What decides a MetaUAS model's shapes and behaviour, torch-free.

The CLI reads its option defaults from these dataclasses and checkpoints store them as
JSON, so they live apart from the torch code that builds the model (`encoder.py`,
`network.py`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from metauas.configs import Panel, from_dict, int_list_or_none, ints_text, option, to_dict
from metauas.errors import UserError

# The sides a model's input may have (training's `size` and `val_size`, predict's and
# evaluate's `size`, a checkpoint's meta.size): the encoder downsamples 32x, and past 4096 px one
# image's features alone are gigabytes; OpenCV and torch would fail on it mid-run.
MIN_SIDE, MAX_SIDE = 32, 4096


def check_side(size: object, setting: str) -> None:
    """A UserError unless `size` is a whole number in [MIN_SIDE, MAX_SIDE]; `setting`
    names it as the library does (a config field in backticks, e.g. "`val_size`")."""
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIDE <= size <= MAX_SIDE:
        raise UserError(f"{setting} must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}, got {size!r}")


# each choice is a Literal alias (for type checkers and the CLI's choices) and its tuple
Alignment = Literal["soft", "hard", "none", "sparsemax", "topk"]
ALIGNMENTS: tuple[Alignment, ...] = typing.get_args(Alignment)
HardSimilarity = Literal["cosine", "dot"]
HARD_SIMILARITIES: tuple[HardSimilarity, ...] = typing.get_args(HardSimilarity)
# fusion = "+"-joined parts, each a function of (query, aligned prompt) and its channel count
Fusion = Literal["cat", "add", "absdiff", "cat+absdiff", "cat+cos", "cat+absdiff+cos"]
FUSIONS: tuple[Fusion, ...] = typing.get_args(Fusion)
Attention = Literal["scse", "none"]
Layout = Literal["features", "official"]  # timm features_only | the MetaUAS b4's stages
GraphFormat = Literal["onnx", "openvino"]  # `metauas export --format`: its file suffix below
GRAPH_FORMATS: dict[GraphFormat, str] = {"onnx": ".onnx", "openvino": ".xml"}


def _whole(value, least: int, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


@dataclass(frozen=True)
class EncoderConfig:
    """Which backbone, which weights, which five feature stages."""

    name: str = option(
        "tf_efficientnet_lite0",
        "timm encoder name, optionally with its weights' tag (tf_efficientnet_lite0 has offline weights), or "
        "`official`: the authors' TF-ported b4 exactly as import-official builds it.",
        Panel.MODEL,
        names=("--encoder",),
    )
    weights: str = option(
        "auto",
        "Encoder weights: auto | offline | timm | none | path to a state dict file.",
        Panel.MODEL,
        names=("--encoder-weights",),
    )
    layout: Layout = option(
        "features", "Encoder stages: features (timm features_only) | official (MetaUAS b4: stem 48@/2).", Panel.MODEL
    )
    # 0: "same" padding from the actual input (timm); N: as for an N px input, fixed (lukemelas)
    static_pad_size: int = option(
        0, "Fix TF 'same' padding as for this input size (380: the authors' b4); 0 pads from the input.", Panel.MODEL
    )


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
    alignment: Alignment = option(  # the normaliser over prompt positions
        "soft",
        "Normaliser of the prompt lookup: soft (softmax, paper) | hard (argmax) | none | sparsemax (DictAS) | "
        "topk (softmax over the --align-topk best prompt positions).",
        Panel.MODEL,
    )
    # decoder input per aligned stage; cat+absdiff+cos won the ablation (docs/ablations.md),
    # plain cat is the paper's
    fusion: Fusion = option(
        "cat+absdiff+cos",
        "Decoder input per deep stage: cat (query, aligned prompt; the paper's) | add | absdiff | cat+absdiff "
        "(+|query-aligned|) | cat+cos (+1-cos channel) | cat+absdiff+cos (best in docs/ablations.md).",
        Panel.MODEL,
    )
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 48)
    attention: Attention = "scse"  # scse | none (decoder block attention)
    aligned_stages: int = 3  # how many of the deepest stages are aligned and fused
    scale_similarity: bool = option(  # divide query·prompt similarity by sqrt(channels)
        False,
        "Divide query-prompt similarities by sqrt(channels). Default: on for sparsemax (as DictAS), off for the "
        "others (as the paper).",
        Panel.MODEL,
        names=("--scale-similarity/--no-scale-similarity",),
        derived=True,
    )
    topk: int = option(  # `topk` alignment: softmax over this many most similar prompt positions
        8, "Prompt positions kept by --alignment topk (per prompt).", Panel.MODEL, names=("--align-topk",)
    )
    learn_temperature: bool = option(
        False,
        "Learn a similarity temperature per aligned stage (from 1).",
        Panel.MODEL,
        names=("--learn-temperature/--no-learn-temperature",),
    )
    # `hard` alignment's choice of prompt position: cosine of the projected features (the
    # paper's Eq. 3) or their raw dot product (models saved before this field existed)
    hard_similarity: HardSimilarity = "cosine"
    # Prompt-query discrepancy beside the learned alignment (docs/quality.md, "Model variants"):
    # for each listed encoder stage (0 = the finest, stride 2 on lite0) one more decoder input
    # channel, 1 - the highest cosine similarity of the query position's frozen feature to ANY
    # prompt position (PatchCore's one-image lookup, no learning). () = off, the paper's model;
    # (0, 1, 2, 3) won on both real dev classes (docs/quality.md, "Model variants")
    discrepancy_stages: tuple[int, ...] = option(
        (0, 1, 2, 3),
        "Encoder stages (0 = finest; lite0 strides 2, 4, 8, 16, 32) whose prompt-query discrepancy, 1 - max "
        "cosine of each query position to any prompt position (frozen features, no learning), joins the decoder "
        "as one more channel at that stage, e.g. 0,1,2,3; 'none' = off. 1,2,3 runs `mix` in about two "
        "thirds of the time, with a lower image score on object kinds (docs/quality.md).",
        Panel.MODEL,
        kind=str,
        parse=int_list_or_none,
        text=ints_text,
    )
    discrepancy_pool: int = option(  # k x k average pooling of both images' features before the cosine
        1, "k x k average pooling (odd k) of the features before the discrepancy's cosine; 1 = none.", Panel.MODEL
    )
    # > 0: logits += gain * (mean of the discrepancy maps, upsampled to the input), with the
    # gain a learned scalar starting at this value: the model starts from the lookup's ranking
    # and learns a correction (needs discrepancy_stages). 0 = off.
    lookup_residual: float = option(
        0.0,
        "Initial gain g of a learned residual: logits += g * (mean discrepancy map, upsampled); the model starts "
        "from the lookup's ranking. 0 = off. Needs --discrepancy-stages.",
        Panel.MODEL,
    )

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise UserError(f"unknown alignment {self.alignment!r}: use {'|'.join(ALIGNMENTS)}")
        if self.hard_similarity not in HARD_SIMILARITIES:
            raise UserError(f"unknown hard similarity {self.hard_similarity!r}: use {'|'.join(HARD_SIMILARITIES)}")
        if self.fusion not in FUSIONS:
            raise UserError(f"unknown fusion {self.fusion!r}: use {'|'.join(FUSIONS)}")
        if self.attention not in typing.get_args(Attention):
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
            raise UserError(f"`topk` must be a positive whole number, got {self.topk}")
        stages = self.discrepancy_stages
        if not all(_whole(x, 0, 4) for x in stages) or len(set(stages)) != len(stages):
            raise UserError(f"`discrepancy_stages` takes distinct encoder stages 0..4, got {list(stages)}")
        if not _whole(self.discrepancy_pool, 1, 99) or self.discrepancy_pool % 2 == 0:
            raise UserError(f"`discrepancy_pool` must be an odd positive whole number, got {self.discrepancy_pool}")
        if self.lookup_residual < 0 or (self.lookup_residual > 0 and not stages):
            raise UserError("`lookup_residual` must be >= 0 and needs `discrepancy_stages`")

    @classmethod
    def from_dict(cls, data: dict, where: str = "model config") -> ModelConfig:
        """Rebuild from `to_dict` (e.g. a checkpoint's JSON metadata); unknown keys are an error."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict:
        return to_dict(self)
