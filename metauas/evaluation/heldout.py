"""Scoring held-out change pairs: every method's maps on decoded pairs, then the seven
paper metrics with the pairs' own masks as the ground truth.

Synthetic held-out pairs (other photos and scenes than training's) are the demo's test
set and the quality and ablation benchmarks' second one beside real defects; this is
the one way all of them score it. Unchanged (`none`) pairs are the normal images of the
image-level metrics. The pairs come from `trainer.stream.resized_pairs` (the caller
reads them), so this needs no trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from metauas.evaluation.metrics import compute_metrics


@dataclass
class HeldoutScores:
    """Per method, the held-out score maps (HxW floats in [0, 1]), beside the pairs."""

    pairs: list[dict]
    maps: dict[str, list]


def pair_maps(methods: dict, pairs: list[dict], batch: int = 16) -> HeldoutScores:
    """Maps of each method (name -> fn(prompt, query) -> B x 1 x H x W) on decoded pairs."""
    import torch

    maps: dict[str, list] = {name: [] for name in methods}
    with torch.inference_mode():
        for i in range(0, len(pairs), batch):
            prompt = torch.stack([p["prompt"] for p in pairs[i : i + batch]])
            query = torch.stack([p["query"] for p in pairs[i : i + batch]])
            for name, method in methods.items():
                maps[name] += list(method(prompt, query)[:, 0].numpy())
    return HeldoutScores(pairs, maps)


def heldout_metrics(scores: HeldoutScores) -> dict[str, dict[str, float]]:
    """The seven paper metrics per method (exact protocol); `none` pairs are the normals."""
    masks = [p["mask"][0].numpy() > 0.5 for p in scores.pairs]
    return {name: compute_metrics(maps, masks) for name, maps in scores.maps.items()}
