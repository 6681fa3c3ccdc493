"""Training-free baseline: "can this query patch be found among the prompt's patches?"

PatchCore with a one-image memory bank (DictAS-style lookup): mid-level features of a
frozen ImageNet encoder (`LookupConfig.encoder`: lite2 by default, or the model's own),
L2 normalised; a query patch's distance is 1 - its
highest cosine similarity to any prompt patch (of any of the K prompts). Two stages
(reductions 8 and 16 for EfficientNet) are averaged at the finer resolution, upsampled
bilinearly to the image and smoothed with a Gaussian. It needs no training, so every
evaluation reports it beside the model as a reference.

The defaults are the best of an ablation on two real defect sets and synthetic held-out
pairs (benchmarks/lookup_ablation.py, docs/quality.md "Lookup baseline"): features are
looked up as they are (k x k averaging blurred small defects away: without it, +5.7 and
+3.0 P-AUROC, +7.4 and +2.6 P-AUPRO on magnetic tiles and glass, every prompt seed, and
more at 128 px). The other options (pooling, finer/coarser stages, per-stage distance
scales, other stage combinations, upsampling order) were measured and kept for users
whose defects or image sizes differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metauas.inference.config import LookupConfig
from metauas.model.network import best_similarity

_CHUNK = 1 << 24  # similarity entries computed at once (64 MiB of float32)
_EPS = 1e-4  # smallest distance scale: a prompt that matches itself everywhere


def _patches(feat: torch.Tensor, k: int) -> torch.Tensor:
    if k > 1:
        feat = F.avg_pool2d(feat, k, stride=1, padding=k // 2, count_include_pad=False)
    return F.normalize(feat, dim=1)


class PairedEncoder(nn.Module):
    """The lookup's encoder and the model's as one feature list: the lookup's stages first,
    then the model's, so the model's last stage stays last (prompt choice pools it) and
    every path that passes feature lists around (prompt caches, exported encoder and head
    graphs) carries both unchanged. `mix` with a lookup on another encoder uses it."""

    def __init__(self, lookup: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.lookup, self.model = lookup, model
        self.lookup_stages = len(getattr(lookup, "channels"))  # a FrozenEncoder's stage count

    def parts(self) -> dict[str, nn.Module]:
        """The two encoders in feature order, named as `Scorer.seconds` counts them."""
        return {"lookup encoder": self.lookup, "encoder": self.model}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [*self.lookup(x), *self.model(x)]


def split_features(encoder: nn.Module, feats: Sequence[torch.Tensor], part: str) -> list[torch.Tensor]:
    """The `lookup` or `model` part of an encoder's feature list (all of it unless paired)."""
    n = getattr(encoder, "lookup_stages", 0)
    if not n:
        return list(feats)
    return list(feats[:n] if part == "lookup" else feats[n:])


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    # 3 sigma, but within the map: reflect padding must be narrower than the map (a
    # --lookup-sigma of the map's size or more is a truncated, nearly flat kernel)
    radius = max(1, min(int(round(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).view(1, 1, 1, -1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, g)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, g.transpose(-1, -2))


def _best_match(q: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """B x N highest cosine of each query patch (B x C x N) to the bank (B' x C x M); the
    model's discrepancy channels use the same blocked search (`network.best_similarity`)."""
    return best_similarity(q.transpose(1, 2), bank.expand(q.shape[0], -1, -1))  # B' is 1 or B: no branch to trace


def stage_scores(prompt: Sequence[torch.Tensor], query: torch.Tensor, k: int) -> torch.Tensor:
    """B x 1 x h x w: 1 - max cosine similarity of each query patch to the prompt patches.

    `prompt` holds one B' x C x h' x w' feature map per shot (B' = 1 is shared by all queries).
    """
    q = _patches(query, k).flatten(2)  # B x C x N
    bank = torch.cat([_patches(p, k).flatten(2) for p in prompt], dim=2)  # B' x C x M
    best = _best_match(q, bank)
    return (1 - best).clamp(0, 1).view(query.shape[0], 1, *query.shape[-2:])


def prompt_scale(prompt: Sequence[torch.Tensor], k: int, exclude: int, quantile: float) -> torch.Tensor:
    """B' x 1 x 1 x 1: the `quantile` of the prompt patches' distances to the other prompt
    patches, a patch's own shot's positions within `exclude` of it left out (they overlap
    it, so they would always match). This is the distance a normal patch at a different
    place gets: what a user with one normal image can know before seeing a query."""
    shots = [_patches(p, k) for p in prompt]
    bank = torch.cat([s.flatten(2) for s in shots], dim=2)  # B' x C x M
    dists, offset = [], 0
    for s in shots:
        h, w = s.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h, device=s.device), torch.arange(w, device=s.device), indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()
        step = max(1, _CHUNK // (s.shape[0] * bank.shape[2]))
        for i in range(0, h * w, step):
            sim = torch.einsum("bcn,bcm->bnm", s.flatten(2)[..., i : i + step], bank)
            near = ((yy[i : i + step, None] - yy[None]).abs() <= exclude) & (
                (xx[i : i + step, None] - xx[None]).abs() <= exclude
            )
            sim[..., offset : offset + h * w].masked_fill_(near, -1.0)
            dists.append(1 - sim.amax(dim=2))
        offset += h * w
    d = torch.cat(dists, dim=1).clamp(0, 1)
    return torch.quantile(d, quantile, dim=1).clamp_min(_EPS).view(-1, 1, 1, 1)


def _combine(maps: list[torch.Tensor], how: str) -> torch.Tensor:
    """Stage maps (same grid) into one: see `LookupConfig.aggregate`."""
    stacked = torch.stack(maps)
    if how == "max":
        return stacked.amax(0)
    if how == "geomean":
        return stacked.clamp_min(0).prod(0).pow(1 / len(maps))
    return stacked.mean(0)


@torch.no_grad()
def lookup_from_features(
    prompt_feats: Sequence[Sequence[torch.Tensor]],
    query_feats: Sequence[torch.Tensor],
    size: Sequence[int],
    cfg: LookupConfig = LookupConfig(),
) -> torch.Tensor:
    """Scores B x 1 x H x W in [0, 1] from encoder features: `prompt_feats` is a list (one
    per shot) of the encoder's feature lists, so features computed once serve model and
    baseline."""
    size = tuple(size)
    fine = max((query_feats[s].shape[-2:] for s in cfg.stages), key=lambda hw: hw[0] * hw[1])
    grid = tuple(fine) if cfg.upsample == "finest" else size
    maps = []
    for s, k in zip(cfg.stages, cfg.windows()):
        prompt = [shot[s] for shot in prompt_feats]
        m = stage_scores(prompt, query_feats[s], k)
        if cfg.normalise == "prompt":
            m = m / prompt_scale(prompt, k, cfg.exclude, cfg.quantile)
        elif cfg.normalise == "query":
            m = m / m.flatten(1).median(dim=1).values.clamp_min(_EPS).view(-1, 1, 1, 1)
        maps.append(F.interpolate(m, size=grid, mode="bilinear", align_corners=False))
    out = _combine(maps, cfg.aggregate)
    if grid != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    if cfg.sigma > 0:
        out = _gaussian_blur(out, cfg.sigma)
    return out.clamp(0, 1) if cfg.normalise == "none" else out / (1 + out)


@torch.no_grad()
def lookup_map(
    encoder: torch.nn.Module,
    prompt: torch.Tensor | Sequence[torch.Tensor],
    query: torch.Tensor,
    cfg: LookupConfig = LookupConfig(),
) -> torch.Tensor:
    """Anomaly scores B x 1 x H x W in [0, 1] of `query` (B x 3 x H x W, RGB in [0, 1]).

    `prompt` is B x 3 x H x W (one prompt per query) or 1 x 3 x H x W (shared), or a list
    of such tensors for K shots (all their patches form the normal dictionary).
    `encoder` is a `FrozenEncoder` (or anything mapping images to a feature list).
    """
    shots = [prompt] if isinstance(prompt, torch.Tensor) else list(prompt)
    prompt_feats = [encoder(p) for p in shots]
    return lookup_from_features(prompt_feats, encoder(query), query.shape[-2:], cfg)
