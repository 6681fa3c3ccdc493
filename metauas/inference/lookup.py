"""Training-free baseline: "can this query patch be found among the prompt's patches?"

PatchCore with a one-image memory bank (DictAS-style lookup): mid-level features of the
same frozen encoder the model uses, each patch averaged with its 3x3 neighbours, L2
normalised; a query patch's score is 1 - its highest cosine similarity to any prompt
patch (of any of the K prompts), clipped to [0, 1]. Two stages (reductions 8 and 16 for
EfficientNet) are averaged at the finer resolution, upsampled bilinearly to the image and
optionally smoothed with a Gaussian. It needs no training, so every evaluation reports it
beside the model as a reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from metauas.inference.config import LookupConfig


def _patches(feat: torch.Tensor, k: int) -> torch.Tensor:
    if k > 1:
        feat = F.avg_pool2d(feat, k, stride=1, padding=k // 2, count_include_pad=False)
    return F.normalize(feat, dim=1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, -1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, g)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, g.transpose(-1, -2))


def stage_scores(prompt: Sequence[torch.Tensor], query: torch.Tensor, k: int) -> torch.Tensor:
    """B x 1 x h x w: 1 - max cosine similarity of each query patch to the prompt patches.

    `prompt` holds one B' x C x h' x w' feature map per shot (B' = 1 is shared by all queries).
    """
    q = _patches(query, k).flatten(2)  # B x C x N
    bank = torch.cat([_patches(p, k).flatten(2) for p in prompt], dim=2)  # B' x C x M
    bank = bank.expand(q.shape[0], -1, -1) if bank.shape[0] == 1 else bank
    best = torch.einsum("bcn,bcm->bnm", q, bank).amax(dim=2)  # B x N
    return (1 - best).clamp(0, 1).view(query.shape[0], 1, *query.shape[-2:])


@torch.no_grad()
def lookup_from_features(prompt_feats: Sequence[Sequence[torch.Tensor]], query_feats: Sequence[torch.Tensor],
                         size: Sequence[int], cfg: LookupConfig = LookupConfig()) -> torch.Tensor:
    """Scores B x 1 x H x W from encoder features: `prompt_feats` is a list (one per shot)
    of the encoder's feature lists, so features computed once serve model and baseline."""
    fine = query_feats[cfg.stages[0]].shape[-2:]
    maps = []
    for s in cfg.stages:
        m = stage_scores([shot[s] for shot in prompt_feats], query_feats[s], cfg.neighbourhood)
        maps.append(F.interpolate(m, size=fine, mode="bilinear", align_corners=False))
    out = F.interpolate(torch.stack(maps).mean(0), size=tuple(size), mode="bilinear", align_corners=False)
    if cfg.sigma > 0:
        out = _gaussian_blur(out, cfg.sigma)
    return out.clamp(0, 1)


@torch.no_grad()
def lookup_map(encoder: torch.nn.Module, prompt: torch.Tensor | Sequence[torch.Tensor], query: torch.Tensor,
               cfg: LookupConfig = LookupConfig()) -> torch.Tensor:
    """Anomaly scores B x 1 x H x W in [0, 1] of `query` (B x 3 x H x W, RGB in [0, 1]).

    `prompt` is B x 3 x H x W (one prompt per query) or 1 x 3 x H x W (shared), or a list
    of such tensors for K shots (all their patches form the normal dictionary).
    `encoder` is a `FrozenEncoder` (or anything mapping images to a feature list).
    """
    shots = [prompt] if isinstance(prompt, torch.Tensor) else list(prompt)
    prompt_feats = [encoder(p) for p in shots]
    return lookup_from_features(prompt_feats, encoder(query), query.shape[-2:], cfg)
