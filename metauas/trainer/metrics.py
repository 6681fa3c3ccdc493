"""Segmentation and detection metrics shared by validation, evaluation and the demo."""

from __future__ import annotations

import numpy as np
import torch


def pixel_auroc_ap(probs: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """Pixel-level AUROC and average precision of `probs` against binary `masks`.

    Returns NaN for both when the masks hold only one class (no ranking exists).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = probs.detach().float().flatten().cpu().numpy()
    labels = (masks.detach().flatten().cpu().numpy() > 0.5).astype(np.uint8)
    if labels.min() == labels.max():
        return float("nan"), float("nan")
    return float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))
