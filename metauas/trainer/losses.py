"""The training loss: the paper's pixel BCE (optionally plus Dice) and DictAS's lookup
constraints, supervised by the change masks.

Pure functions of the model's outputs and the masks, so the loop (`train.py`) and the
training benchmark (`bench.py`) compute the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metauas.model.network import cosine_distance
from metauas.trainer.config import TrainConfig


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Pixel BCE (the paper's loss), optionally plus soft Dice over each image."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), masks)
    if dice_weight > 0:
        probs = torch.sigmoid(logits.float()).flatten(1)
        target = masks.flatten(1)
        dice = 1 - (2 * (probs * target).sum(1) + 1) / (probs.sum(1) + target.sum(1) + 1)
        loss = loss + dice_weight * dice.mean()
    return loss


CQC_WEIGHT = 0.1  # DictAS's weight of the contrastive query constraint beside L_query


def stage_masks(masks: torch.Tensor, size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchanged and changed positions (B x h x w bools) of a feature stage.

    A stage position covers a cell of input pixels; its changed fraction comes from area
    pooling. Unchanged = no changed pixel in the cell (L_query must not pull a changed
    pixel's lookup towards the query); changed = at least half the cell changed. Mixed
    cells at change borders are in neither set: their features mix both.
    """
    fraction = F.adaptive_avg_pool2d(masks.float(), (size[0], size[1]))[:, 0]
    return fraction == 0, fraction >= 0.5


def lookup_losses(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], masks: torch.Tensor, margin: float
) -> dict[str, torch.Tensor]:
    """DictAS's visual lookup constraints, supervised by the change masks; stage means.

    In the frozen feature space, with distance d = 1 - cos(query feature, aligned prompt
    feature) per position: L_query = mean d over unchanged positions (an unchanged
    position's lookup should retrieve its own content); L_CQC = mean over pairs of
    relu(mean unchanged d - mean changed d + margin), only over pairs with both kinds of
    position at the stage's resolution (a change should not be found in the prompt, so
    its distance must exceed the unchanged distance by the margin).
    """
    queries, cqcs = [], []
    for query, aligned in pairs:
        dist = cosine_distance(query.float(), aligned.float())[:, 0]  # B x h x w
        unchanged, changed = stage_masks(masks, dist.shape[-2:])
        queries.append((dist * unchanged).sum() / unchanged.sum().clamp(min=1))
        both = unchanged.flatten(1).any(1) & changed.flatten(1).any(1)
        gap = _masked_mean(dist, unchanged) - _masked_mean(dist, changed) + margin
        cqcs.append((gap.relu() * both).sum() / both.sum().clamp(min=1))
    return {"loss_query": torch.stack(queries).mean(), "loss_cqc": torch.stack(cqcs).mean()}


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of x (B x h x w) over `keep` positions (0 where none)."""
    return (x * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1)


def consistency_loss(logits: torch.Tensor, max_weight: float = 1.0) -> torch.Tensor:
    """How far the maps of a batch's two halves (each query, then its second shot) are
    apart: mean |p - p'| over pixels plus max_weight x mean |max p - max p'| over images,
    so the image score (the map's maximum) is held to the same map (issue 20). With the
    maxima's term on, both maxima can agree by meeting at a ceiling the model learns
    (docs/quality.md, "Consistency between two shots"); max_weight 0 asks the maps alone."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    first, second = probs.chunk(2)
    return (first - second).abs().mean() + max_weight * (first.amax(1) - second.amax(1)).abs().mean()


def training_loss(
    logits: torch.Tensor, pairs: list | None, masks: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and its parts for the log (`loss` is the total; the BCE/Dice
    part `loss_seg` and the lookup parts are logged only when the lookup losses are on)."""
    loss = segmentation_loss(logits, masks, cfg.dice_weight)
    parts = {"loss": loss}
    if pairs is not None:
        lookup = lookup_losses(pairs, masks, cfg.cqc_margin)
        parts["loss_seg"] = loss
        parts["loss_lookup"] = lookup["loss_query"] + CQC_WEIGHT * lookup["loss_cqc"]
        parts.update(lookup)
        loss = loss + cfg.lookup_weight * parts["loss_lookup"]
        parts["loss"] = loss
    if cfg.consistency > 0:
        parts["loss_consistency"] = consistency_loss(logits, cfg.consistency_max)
        loss = loss + cfg.consistency * parts["loss_consistency"]
        parts["loss"] = loss
    return loss, parts
