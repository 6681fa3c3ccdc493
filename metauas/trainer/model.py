"""The MetaUAS model: frozen encoder, prompt-to-query feature alignment, UNet decoder.

A change between a normal prompt and a query is found by (1) encoding both images with a
frozen ImageNet encoder in one batched call, (2) on the three deepest stages aligning the
prompt's features to the query's positions (the two images need not be registered),
(3) fusing query and aligned prompt features, and (4) decoding the fused stages plus the
two shallow query stages with a UNet (scSE attention) to a full-resolution logit map.
Only alignment projections, decoder and head learn; see docs/model.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metauas.errors import UserError
from metauas.trainer.encoder import EncoderConfig, build_encoder

ALIGNMENTS = ("soft", "hard", "none")
FUSIONS = ("cat", "add", "absdiff")
Features = list[torch.Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the model's shapes and behaviour; saved in checkpoints."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    alignment: str = "soft"  # soft | hard | none
    fusion: str = "cat"  # cat | add | absdiff
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 48)
    attention: str = "scse"  # scse | none (decoder block attention)
    aligned_stages: int = 3  # how many of the deepest stages are aligned and fused
    scale_similarity: bool = False  # divide query·prompt similarity by sqrt(channels)

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise UserError(f"unknown alignment {self.alignment!r}: use {'|'.join(ALIGNMENTS)}")
        if self.fusion not in FUSIONS:
            raise UserError(f"unknown fusion {self.fusion!r}: use {'|'.join(FUSIONS)}")
        if self.attention not in ("scse", "none"):
            raise UserError(f"unknown decoder attention {self.attention!r}: use scse|none")
        if len(self.decoder_channels) != 5:
            raise UserError("decoder channels must be five numbers (one per encoder stage)")

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from `dataclasses.asdict(cfg)` (e.g. a checkpoint's JSON metadata)."""
        data = dict(data)
        data["encoder"] = EncoderConfig(**data.get("encoder", {}))
        if "decoder_channels" in data:
            data["decoder_channels"] = tuple(data["decoder_channels"])
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Alignment(nn.Module):
    """One stage's shared 1x1 projection (to half the channels) and alignment mode.

    The projection only computes similarities (as the official model does): the aligned
    output is made of the prompt's original encoder features, so `cat` fusion doubles
    the stage's channels and `add`/`absdiff` keep them.
    """

    def __init__(self, channels: int, mode: str, scale: bool) -> None:
        super().__init__()
        # `none` compares nothing, so it has no projection (DDP rejects unused parameters)
        self.project = nn.Conv2d(channels, channels // 2, kernel_size=1) if mode != "none" else None
        self.mode = mode
        self.scale = scale

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Prompt features (B or 1 x C x h' x w') re-arranged onto the query's grid."""
        if self.mode == "none":
            return align(prompt, prompt, query, "none")
        return align(prompt, self.project(prompt), self.project(query), self.mode, self.scale)


def align(values: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, mode: str,
          scale: bool = False) -> torch.Tensor:
    """For each query position, the prompt `values` at the positions whose `keys` match it.

    soft: the softmax (over prompt positions) of query·key similarity weights a mean of
    the values, a convex combination; hard: the value of the most similar position; none:
    the values as they are (resized to the query's grid). argmax has no gradient, so in
    training hard alignment passes the soft alignment's gradient to the projection
    (straight-through). A batch-1 prompt is shared by all B queries.
    """
    b, _, h, w = query.shape
    if mode == "none":
        if values.shape[-2:] != (h, w):
            values = F.interpolate(values, size=(h, w), mode="bilinear", align_corners=False)
        return values.expand(b, -1, -1, -1)
    c = values.shape[1]
    q = query.flatten(2).transpose(1, 2)  # B x N x c'
    k = keys.flatten(2).expand(b, -1, -1)  # B x c' x M
    v = values.flatten(2).transpose(1, 2).expand(b, -1, -1)  # B x M x C
    sim = torch.bmm(q, k)  # B x N x M
    if scale:
        sim = sim * query.shape[1] ** -0.5
    soft = torch.bmm(sim.softmax(dim=-1), v) if mode == "soft" or torch.is_grad_enabled() else None
    if mode == "soft":
        out = soft
    else:
        out = torch.gather(v, 1, sim.argmax(dim=-1, keepdim=True).expand(-1, -1, c))
        if soft is not None:  # straight-through: hard values forward, soft gradients back
            out = out + (soft - soft.detach())
    return out.transpose(1, 2).reshape(b, c, h, w)


def fuse(query: torch.Tensor, prompt: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cat":
        return torch.cat([query, prompt], dim=1)
    if mode == "add":
        return query + prompt
    return (query - prompt).abs()


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (Roy et al. 2018), as smp's Unet."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, max(channels // reduction, 1), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(channels // reduction, 1), channels, 1),
            nn.Sigmoid(),
        )
        self.spatial_gate = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_gate(x) + x * self.spatial_gate(x)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, attend, two conv-BN-ReLU, attend."""

    def __init__(self, cin: int, cskip: int, cout: int, attention: str) -> None:
        super().__init__()
        make_attention = SCSE if attention == "scse" else (lambda c: nn.Identity())
        self.attention1 = make_attention(cin + cskip) if cskip else nn.Identity()
        self.conv1 = _conv_bn_relu(cin + cskip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)
        self.attention2 = make_attention(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor:
        x = F.interpolate(x, size=tuple(size), mode="nearest")
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


class UnetDecoder(nn.Module):
    """smp's Unet decoder shape: the deepest stage is the head, the four others are skips,
    and a fifth block without a skip brings the map to the input resolution."""

    def __init__(self, stage_channels: Sequence[int], decoder_channels: Sequence[int],
                 attention: str) -> None:
        super().__init__()
        deep_first = list(stage_channels)[::-1]
        inputs = [deep_first[0], *decoder_channels[:-1]]
        skips = [*deep_first[1:], 0]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o, attention) for i, s, o in zip(inputs, skips, decoder_channels)
        )

    def forward(self, stages: Features, size: Sequence[int]) -> torch.Tensor:
        deep_first = stages[::-1]
        x = deep_first[0]
        for block, skip in zip(self.blocks, [*deep_first[1:], None]):
            x = block(x, skip, skip.shape[-2:] if skip is not None else size)
        return x


class MetaUAS(nn.Module):
    """One-prompt change/anomaly segmentation: logits B x 1 x H x W for (prompt, query)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        channels = self.encoder.channels
        n = cfg.aligned_stages
        self.alignments = nn.ModuleList(
            Alignment(c, cfg.alignment, cfg.scale_similarity) for c in channels[-n:]
        )
        fused = [c * (2 if cfg.fusion == "cat" else 1) for c in channels[-n:]]
        self.decoder = UnetDecoder([*channels[:-n], *fused], cfg.decoder_channels, cfg.attention)
        self.head = nn.Conv2d(cfg.decoder_channels[-1], 1, kernel_size=1)

    def encode(self, images: torch.Tensor) -> Features:
        """Frozen encoder features of RGB images in [0, 1] (no gradients)."""
        with torch.no_grad():
            return [f.detach() for f in self.encoder(images)]

    def encode_pair(self, prompt: torch.Tensor, query: torch.Tensor) -> tuple[Features, Features]:
        """Prompt and query through the encoder in one batched call."""
        feats = self.encode(torch.cat([prompt, query], dim=0))
        b = prompt.shape[0]
        return [f[:b] for f in feats], [f[b:] for f in feats]

    def fused_stages(self, prompt_feats: Features | list[Features], query_feats: Features) -> Features:
        """Shallow query stages + fused deep stages. K prompts: aligned features averaged."""
        shots = prompt_feats if isinstance(prompt_feats[0], (list, tuple)) else [prompt_feats]
        n = self.cfg.aligned_stages
        out = list(query_feats[:-n])
        for i, module in enumerate(self.alignments):
            level = len(query_feats) - n + i
            query = query_feats[level]
            aligned = torch.stack([module(shot[level], query) for shot in shots]).mean(dim=0)
            out.append(fuse(query, aligned, self.cfg.fusion))
        return out

    def segment(self, prompt_feats: Features | list[Features], query_feats: Features,
                size: Sequence[int] | None = None) -> torch.Tensor:
        """Logits B x 1 x H x W at the query's input resolution (`size`, default 2x stage 0
        times its reduction). Prompt features with batch 1 are shared by all B queries."""
        if size is None:
            first = query_feats[0]
            size = [s * self.encoder.reductions[0] for s in first.shape[-2:]]
        x = self.decoder(self.fused_stages(prompt_feats, query_feats), size)
        return self.head(x)

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if prompt.shape[0] == query.shape[0]:
            pf, qf = self.encode_pair(prompt, query)
        else:  # one prompt shared by many queries
            pf, qf = self.encode(prompt), self.encode(query)
        return self.segment(pf, qf, size=query.shape[-2:])

    @torch.inference_mode()
    def predict(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Anomaly probabilities B x 1 x H x W (sigmoid of the logits), no autograd."""
        return torch.sigmoid(self(prompt, query))

    def learnable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def learnable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights that training changes (everything but the frozen encoder)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        learnable = sum(p.numel() for p in self.learnable_parameters())
        return {"total": total, "learnable": learnable}
