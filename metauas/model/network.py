"""The MetaUAS model: frozen encoder, prompt-to-query feature alignment, UNet decoder.

A change between a normal prompt and a query is found by (1) encoding both images with a
frozen ImageNet encoder in one batched call, (2) on the three deepest stages aligning the
prompt's features to the query's positions (the two images need not be registered),
(3) fusing query and aligned prompt features, and (4) decoding the fused stages plus the
two shallow query stages with a UNet (scSE attention) to a full-resolution logit map.
Only alignment projections, decoder and head learn; see docs/model.md.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metauas.model.config import ModelConfig
from metauas.model.encoder import build_encoder

Features = list[torch.Tensor]
CHANGE_PRIOR = 0.05  # fraction of changed pixels the head starts at (builtin pairs: ~7%)
AlignedPair = tuple[torch.Tensor, torch.Tensor]  # (query feature, aligned prompt feature)


class Alignment(nn.Module):
    """One stage's shared 1x1 projection (to half the channels) and alignment mode.

    The projection only computes similarities (as the official model does): the aligned
    output is made of the prompt's original encoder features, so `cat` fusion doubles
    the stage's channels and `add`/`absdiff` keep them. With `learn_temperature` the
    similarity is divided by exp(log_temperature), learned from 0 (temperature 1), so
    training can choose how peaked the lookup is instead of inheriting the features' scale.
    """

    def __init__(self, channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.mode, self.scale, self.topk = cfg.alignment, cfg.scale_similarity, cfg.topk
        self.hard_similarity = cfg.hard_similarity
        # `none` compares nothing, so it has no parameters (DDP rejects unused parameters)
        learns = self.mode != "none"
        self.project: nn.Conv2d | None = nn.Conv2d(channels, channels // 2, kernel_size=1) if learns else None
        self.log_temperature = nn.Parameter(torch.zeros(())) if learns and cfg.learn_temperature else None

    def forward(self, prompts: torch.Tensor | Sequence[torch.Tensor], query: torch.Tensor) -> torch.Tensor:
        """Prompt features (each B or 1 x C x h' x w') re-arranged onto the query's grid.

        Several prompts form ONE dictionary: their positions are concatenated, so each
        query position looks up the best match among all K·h'·w' prompt positions.
        """
        prompts = [prompts] if isinstance(prompts, torch.Tensor) else list(prompts)
        if self.mode == "none":  # no lookup to share: the prompts' mean, resized
            return torch.stack([align(p, p, query, "none") for p in prompts]).mean(dim=0)
        temperature = self.log_temperature.exp() if self.log_temperature is not None else None
        project = typing.cast(nn.Conv2d, self.project)  # every mode but none has one
        return align(
            dictionary(prompts),
            dictionary([project(p) for p in prompts]),
            project(query),
            self.mode,
            self.scale,
            topk=self.topk,
            shots=len(prompts),
            temperature=temperature,
            hard_similarity=self.hard_similarity,
        )


def dictionary(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """K feature maps (each B or 1 x C x h x w) as one B' x C x (K·h·w) set of positions."""
    if len(features) == 1:
        return features[0]
    batch = max(f.shape[0] for f in features)
    return torch.cat([f.flatten(2).expand(batch, -1, -1) for f in features], dim=2)


def sparsemax(x: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row (last dim) onto the probability simplex.

    Martins & Astudillo 2016: sort descending, the support is the largest k with
    1 + k·z_k > sum_{j<=k} z_j, and the threshold tau = (sum of the support - 1) / k;
    the output is max(x - tau, 0), so weak matches get exactly zero weight. Autograd
    through sort/gather/clamp gives sparsemax's exact Jacobian. Computed in float32:
    the cumulative sums lose the support in half precision.
    """
    z = x.float()
    z = z - z.amax(dim=-1, keepdim=True)
    ordered = z.sort(dim=-1, descending=True).values
    cumsum = ordered.cumsum(dim=-1)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = (1 + k * ordered > cumsum).sum(dim=-1, keepdim=True)
    tau = (cumsum.gather(-1, support - 1) - 1) / support
    return (z - tau).clamp(min=0).to(x.dtype)


def topk_softmax(x: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax over the k largest entries of each row (last dim); zero elsewhere."""
    if k >= x.shape[-1]:
        return x.softmax(dim=-1)
    top = x.topk(k, dim=-1)
    return torch.full_like(x, float("-inf")).scatter(-1, top.indices, top.values).softmax(dim=-1)


def normalise(sim: torch.Tensor, mode: str, *, topk: int = 8, shots: int = 1) -> torch.Tensor:
    """Lookup weights over the prompt positions (last dim) of query·key similarities.

    With K prompts in one dictionary (`shots` = K) the sparse normalisers are set so that
    K identical prompts give exactly the 1-shot weights: top-k keeps k·K entries, and
    sparsemax projects onto the simplex scaled by K (one unit of mass per prompt), i.e.
    sparsemax(sim / K); softmax needs nothing (duplicates share their weight).
    """
    if mode == "sparsemax":
        return sparsemax(sim / shots)
    if mode == "topk":
        return topk_softmax(sim, topk * shots)
    return sim.softmax(dim=-1)  # soft, and hard's straight-through gradient


def align(
    values: torch.Tensor,
    keys: torch.Tensor,
    query: torch.Tensor,
    mode: str,
    scale: bool = False,
    *,
    topk: int = 8,
    shots: int = 1,
    temperature: torch.Tensor | None = None,
    hard_similarity: str = "dot",
) -> torch.Tensor:
    """For each query position, the prompt `values` at the positions whose `keys` match it.

    soft / sparsemax / topk: weights from `normalise` (softmax, sparse projection, softmax
    over the top k) over prompt positions of the query·key similarity make a convex
    combination of the values; hard: the value of the most similar position, by cosine
    (the paper's Eq. 3) or raw dot product (`hard_similarity`); none: the values as they
    are (resized to the query's grid). argmax has no gradient, so in training hard
    alignment passes the soft alignment's gradient to the projection (straight-through).
    A batch-1 prompt is shared by all B queries. `values` and `keys` may be flattened
    (B x C x M) dictionaries of several prompts (see `dictionary`).
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
    if temperature is not None:
        sim = sim / temperature
    if mode != "hard":
        out = torch.bmm(normalise(sim, mode, topk=topk, shots=shots).to(v.dtype), v)
    else:
        choice = sim if hard_similarity == "dot" else torch.bmm(F.normalize(q, dim=-1), F.normalize(k, dim=1))
        out = torch.gather(v, 1, choice.argmax(dim=-1, keepdim=True).expand(-1, -1, c))
        if torch.is_grad_enabled():  # straight-through: hard values forward, soft gradients back
            soft = torch.bmm(sim.softmax(dim=-1).to(v.dtype), v)
            out = out + (soft - soft.detach())
    return out.transpose(1, 2).reshape(b, c, h, w)


# Similarities computed per block of query x prompt positions: 2048 x 512 float32 (4 MiB)
# stay in the cache between the product and its maximum. Whole rows of prompt positions
# (4096 x 16384 at stage 0 of a 256 px image, 256 MiB) go through memory: the model with
# discrepancy at stages 0-3 took 2.6-5.4x the model without, and 1.7-1.8x with these
# blocks, the same result (docs/quality.md, "Inference cost").
QUERY_BLOCK, PROMPT_BLOCK = 2048, 512


def best_similarity(
    queries: torch.Tensor, keys: torch.Tensor, query_block: int = QUERY_BLOCK, prompt_block: int = PROMPT_BLOCK
) -> torch.Tensor:
    """B x N: the highest dot product of each query row (B x N x C) with any key column
    (B x C x M), block by block with a running maximum (exact: the same products)."""
    n, m = queries.shape[1], keys.shape[2]
    best = []
    for i in range(0, n, query_block):
        rows = queries[:, i : i + query_block]
        top = torch.bmm(rows, keys[:, :, :prompt_block]).amax(dim=2)
        for j in range(prompt_block, m, prompt_block):
            top = torch.maximum(top, torch.bmm(rows, keys[:, :, j : j + prompt_block]).amax(dim=2))
        best.append(top)
    return best[0] if len(best) == 1 else torch.cat(best, dim=1)


@torch.no_grad()
def max_cosine_distance(query: torch.Tensor, prompts: Sequence[torch.Tensor], pool: int = 1) -> torch.Tensor:
    """B x 1 x h x w: 1 - the highest cosine similarity of each query position to any
    position of any prompt (each B or 1 x C x h' x w'; batch 1 is shared by all queries).

    The one-image PatchCore lookup on frozen features (no gradients). `pool` averages each
    k x k neighbourhood first. `best_similarity` goes block by block, so the similarity
    matrix is never held whole (stride 2 at 256 px: 16384 x 16384 positions).
    """

    def patches(f: torch.Tensor) -> torch.Tensor:
        if pool > 1:
            f = F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False)
        return F.normalize(f.float(), dim=1, eps=1e-6).flatten(2)

    b, _, h, w = query.shape
    bank = torch.cat([patches(p).expand(b, -1, -1) for p in prompts], dim=2)  # B x C x M
    best = best_similarity(patches(query).transpose(1, 2), bank)
    return (1 - best).clamp(0, 2).view(b, 1, h, w).to(query.dtype)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos over channels (dim 1), keeping a 1-channel axis: B x 1 x h x w."""
    return 1 - F.cosine_similarity(a, b, dim=1, eps=1e-6).unsqueeze(1)


# each fusion part: (function of query and aligned prompt -> tensors, channels per input channel C)
_FUSION_PARTS = {
    "cat": (lambda q, p: [q, p], lambda c: 2 * c),
    "add": (lambda q, p: [q + p], lambda c: c),
    "absdiff": (lambda q, p: [(q - p).abs()], lambda c: c),  # FDSL's feature discrepancy
    "cos": (lambda q, p: [cosine_distance(q, p)], lambda c: 1),
}


def fuse(query: torch.Tensor, prompt: torch.Tensor, mode: str) -> torch.Tensor:
    """Decoder input from query and aligned prompt features: the parts of `mode`, concatenated."""
    parts = [t for name in mode.split("+") for t in _FUSION_PARTS[name][0](query, prompt)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def fused_channels(channels: int, mode: str) -> int:
    """Channels `fuse` gives for a stage of `channels`."""
    return sum(_FUSION_PARTS[name][1](channels) for name in mode.split("+"))


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
        # = x·cSE(x) + x·sSE(x), with one full-size product instead of two (memory-bound on CPU)
        return x * (self.channel_gate(x) + self.spatial_gate(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


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

    def __init__(self, stage_channels: Sequence[int], decoder_channels: Sequence[int], attention: str) -> None:
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
        self.alignments = nn.ModuleList(Alignment(c, cfg) for c in channels[-n:])
        fused = [fused_channels(c, cfg.fusion) for c in channels[-n:]]
        inputs = [c + (s in cfg.discrepancy_stages) for s, c in enumerate([*channels[:-n], *fused])]
        self.decoder = UnetDecoder(inputs, cfg.decoder_channels, cfg.attention)
        self.head = nn.Conv2d(cfg.decoder_channels[-1], 1, kernel_size=1)
        # Start at the prior of a changed pixel (Lin et al. 2017): a fresh head predicts
        # ~0.5 everywhere and its first hundreds of steps would only learn this bias.
        bias = typing.cast(torch.Tensor, self.head.bias)  # a Conv2d made with bias=True, the default
        nn.init.constant_(bias, math.log(CHANGE_PRIOR / (1 - CHANGE_PRIOR)))
        self.residual_gain = nn.Parameter(torch.tensor(float(cfg.lookup_residual))) if cfg.lookup_residual > 0 else None

    def encode(self, images: torch.Tensor) -> Features:
        """Frozen encoder features of RGB images in [0, 1] (no gradients)."""
        with torch.no_grad():
            return [f.detach() for f in self.encoder(images)]

    def encode_pair(self, prompt: torch.Tensor, query: torch.Tensor) -> tuple[Features, Features]:
        """Prompt and query through the encoder in one batched call."""
        feats = self.encode(torch.cat([prompt, query], dim=0))
        b = prompt.shape[0]
        return [f[:b] for f in feats], [f[b:] for f in feats]

    def aligned_pairs(
        self, prompt_feats: Features | list[Features], query_feats: Features, joint: bool = False
    ) -> list[AlignedPair]:
        """(query feature, aligned prompt feature) for each aligned (deep) stage.

        K prompts (a list of K feature lists): `joint` aligns against one dictionary of
        all K prompts' positions (DictAS); otherwise each prompt is aligned on its own and
        the K aligned features are averaged (the official code's K-shot).
        """
        shots = prompt_feats if isinstance(prompt_feats[0], (list, tuple)) else [prompt_feats]
        n = self.cfg.aligned_stages
        pairs = []
        for i, module in enumerate(self.alignments):
            level = len(query_feats) - n + i
            query = query_feats[level]
            if joint:
                aligned = module([shot[level] for shot in shots], query)
            else:
                aligned = torch.stack([module(shot[level], query) for shot in shots]).mean(dim=0)
            pairs.append((query, aligned))
        return pairs

    def _fuse(
        self, query_feats: Features, pairs: list[AlignedPair], prompt_feats: Features | list[Features]
    ) -> Features:
        """Shallow query stages + the fused deep stages, each discrepancy stage with its
        1 - max cos map appended as the last channel: the decoder's input."""
        shallow = query_feats[: -self.cfg.aligned_stages]
        stages = [*shallow, *(fuse(q, a, self.cfg.fusion) for q, a in pairs)]
        if not self.cfg.discrepancy_stages:
            return stages
        shots = prompt_feats if isinstance(prompt_feats[0], (list, tuple)) else [prompt_feats]
        for s in self.cfg.discrepancy_stages:
            d = max_cosine_distance(query_feats[s], [shot[s] for shot in shots], self.cfg.discrepancy_pool)
            stages[s] = torch.cat([stages[s], d.to(stages[s].dtype)], dim=1)
        return stages

    def fused_stages(
        self, prompt_feats: Features | list[Features], query_feats: Features, joint: bool = False
    ) -> Features:
        """Shallow query stages + fused deep stages (K prompts: see `aligned_pairs`)."""
        return self._fuse(query_feats, self.aligned_pairs(prompt_feats, query_feats, joint), prompt_feats)

    def lookup_prior(self, stages: Features, size: Sequence[int]) -> torch.Tensor:
        """Mean of the discrepancy channels (each stage's last), upsampled to `size`."""
        maps = [
            F.interpolate(stages[s][:, -1:].float(), size=tuple(size), mode="bilinear", align_corners=False)
            for s in self.cfg.discrepancy_stages
        ]
        return torch.stack(maps).mean(dim=0)

    def _decode(self, stages: Features, query_feats: Features, size: Sequence[int] | None) -> torch.Tensor:
        if size is None:
            size = [s * self.encoder.reductions[0] for s in query_feats[0].shape[-2:]]
        logits = self.head(self.decoder(stages, size))
        if self.residual_gain is not None:
            logits = logits + self.residual_gain * self.lookup_prior(stages, size).to(logits.dtype)
        return logits

    def segment(
        self,
        prompt_feats: Features | list[Features],
        query_feats: Features,
        size: Sequence[int] | None = None,
        joint: bool = False,
    ) -> torch.Tensor:
        """Logits B x 1 x H x W at the query's input resolution (`size`, default 2x stage 0
        times its reduction). Prompt features with batch 1 are shared by all B queries;
        K prompts (a list of feature lists) are averaged, or one dictionary if `joint`."""
        return self._decode(self.fused_stages(prompt_feats, query_feats, joint), query_feats, size)

    def forward(
        self, prompt: torch.Tensor, query: torch.Tensor, return_aligned: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[AlignedPair]]:
        """Logits; with `return_aligned` also the (query, aligned prompt) features of each
        aligned stage, for losses in the frozen feature space (no second forward).

        B prompts and k x B queries: query i goes with prompt i mod B, each prompt encoded
        once (one prompt for every query; `train --consistency`'s two shots of each query)."""
        b, n = prompt.shape[0], query.shape[0]
        if b == n:
            pf, qf = self.encode_pair(prompt, query)
        elif n % b == 0:
            pf, qf = self.encode(prompt), self.encode(query)
            if b > 1:
                pf = [f.repeat(n // b, 1, 1, 1) for f in pf]
        else:
            raise ValueError(f"{n} queries do not split evenly over {b} prompts")
        pairs = self.aligned_pairs(pf, qf)
        logits = self._decode(self._fuse(qf, pairs, pf), qf, size=query.shape[-2:])
        return (logits, pairs) if return_aligned else logits

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
