"""Segmentation and detection metrics shared by validation, evaluation and the demo.

Every curve metric here (AUROC, AP, F1max, AUPRO) is computed from one `Counts` table:
per distinct score level, how many negatives and positives sit at that level and, for
PRO, the sum over positive pixels of 1 / (size of the pixel's defect region). PRO at a
threshold is the mean over regions of the fraction of the region above it, which is
linear in pixels, so it accumulates like a histogram and never needs the maps kept.

Levels are either the exact distinct scores (`bins=0`; matches scikit-learn to float
precision) or fixed levels over [0, 1] (`bins` equal ones above 2^-8, log-spaced ones
below so saturated sigmoid maps keep their ranking), which stream any number of pixels
in O(bins) memory (docs/evaluation.md measures the difference). Two protocols (docs/evaluation.md):
- ``exact`` (default): scores as they are, masks as given, anomalib-style AUPRO (every
  level a threshold, interpolated at FPR 0.3, divided by 0.3), AUROC never flipped.
- ``official``: the MetaUAS/cflow-ad evaluation: per-class min-max maps, PRO at 200 even
  thresholds with FPR < 0.3 re-scaled to [0, 1], and 1 - AUROC whenever AUROC < 0.5.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from metauas.configs import Panel, option

METRICS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "P-AUPRO")
# NumPy 2 renamed trapz to trapezoid; both compute the same area (NumPy >= 1.24 is supported)
_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")
Protocol = Literal["exact", "official"]
PROTOCOLS: tuple[Protocol, ...] = typing.get_args(Protocol)
ImageScore = Literal["max", "topk"]  # the map's max (paper) | mean of its top-k pixels
IMAGE_SCORES: tuple[ImageScore, ...] = typing.get_args(ImageScore)


def pixel_auroc_ap(probs, masks) -> tuple[float, float]:
    """Pixel-level AUROC and average precision of `probs` against binary `masks` (arrays
    or tensors of any shape), from the same exact counts as every other metric here.

    Returns NaN for both when the masks hold only one class (no ranking exists).
    """
    scores = _numpy(probs).astype(np.float64).ravel()
    labels = _numpy(masks).ravel() > 0.5
    if labels.min() == labels.max():
        return float("nan"), float("nan")
    counts = counts_from_scores(scores, labels)
    return auroc(counts), average_precision(counts)


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


@dataclass
class Counts:
    """Per score level, in ascending score order: negatives, positives, region weights."""

    neg: np.ndarray
    pos: np.ndarray
    region_weight: np.ndarray
    regions: int = 0

    def descending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulative (false positives, true positives, PRO sum) for thresholds high -> low."""
        return (np.cumsum(self.neg[::-1]), np.cumsum(self.pos[::-1]), np.cumsum(self.region_weight[::-1]))


def counts_from_scores(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, regions: int = 0
) -> Counts:
    """Exact counts: one level per distinct score (ties share a level, as in sklearn)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    levels, inverse = np.unique(scores, return_inverse=True)
    n = len(levels)
    w = np.zeros_like(scores) if weights is None else np.asarray(weights, np.float64).ravel()
    return Counts(
        neg=np.bincount(inverse[~labels], minlength=n).astype(np.float64),
        pos=np.bincount(inverse[labels], minlength=n).astype(np.float64),
        region_weight=np.bincount(inverse, weights=w, minlength=n),
        regions=regions,
    )


def auroc(c: Counts) -> float:
    """Area under the ROC curve (trapezoid over distinct thresholds, sklearn's definition)."""
    fp, tp, _ = c.descending()
    if tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    return float(_trapezoid(tpr, fpr))


def _precision_recall(c: Counts) -> tuple[np.ndarray, np.ndarray]:
    fp, tp, _ = c.descending()
    keep = (tp + fp) > 0
    return tp[keep] / (tp[keep] + fp[keep]), tp[keep] / tp[-1]


def average_precision(c: Counts) -> float:
    """sum_n (R_n - R_{n-1}) P_n over thresholds high -> low (sklearn's AP)."""
    if c.pos.sum() == 0:
        return float("nan")
    precision, recall = _precision_recall(c)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def f1_max(c: Counts) -> float:
    """Best F1 over all thresholds."""
    if c.pos.sum() == 0:
        return float("nan")
    precision, recall = _precision_recall(c)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def aupro(c: Counts, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to `fpr_limit`, divided by it (anomalib / MVTec style).

    The curve runs through every level's (FPR, PRO) point from (0, 0); the last segment
    is interpolated at exactly `fpr_limit`.
    """
    fp, _, pro_sum = c.descending()
    if c.regions == 0 or fp[-1] == 0:
        return float("nan")
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    pro = np.concatenate([[0.0], pro_sum / c.regions])
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:end], pro[:end]
    if end < len(fpr) and x[-1] < fpr_limit:
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(_trapezoid(y, x) / fpr_limit)


def official_pro(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float = 0.3) -> float:
    """cflow-ad / MetaUAS PRO: points with FPR < limit, FPRs min-max re-scaled, trapezoid."""
    keep = fpr < fpr_limit
    x, y = fpr[keep], pro[keep]
    if len(x) < 2 or x.max() == x.min():
        return float("nan")
    x = (x - x.min()) / (x.max() - x.min())
    # integrate in threshold order, as sklearn.metrics.auc does on the reference's arrays
    # (thresholds ascending = FPR non-increasing): sorting by FPR would reorder the points
    # of equal FPR and change the area
    return float(-_trapezoid(y, x))


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected defect regions (8-connectivity, as skimage.measure.label's default)."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels, n - 1


def region_weights(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Per pixel 1 / (area of its region), 0 outside defects; and the number of regions."""
    labels, n = label_regions(mask)
    areas = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    areas[0] = np.inf
    return (1.0 / areas)[labels], n


# Below LOG_FLOOR scores are binned by the top bits of their float32 pattern (monotone for
# non-negative floats): log-spaced levels, 2^-13 relative precision, down to LOG_MIN (lower
# scores tie), so the many near-zero probabilities of a confident sigmoid keep their order;
# above it, `bins` linear levels. Linear bins alone over [0, 1] tie every pixel under
# 1/bins: on maps with median probability ~1e-7 that moved P-AUROC from 0.96 to 0.43.
LOG_FLOOR, LOG_MIN = 2.0**-8, 2.0**-40
_LOG_SHIFT = 10
_LOG_BASE = int(np.float32(LOG_MIN).view(np.uint32)) >> _LOG_SHIFT
_LOG_LEVELS = (int(np.float32(LOG_FLOOR).view(np.uint32)) >> _LOG_SHIFT) - _LOG_BASE


def score_levels(scores: np.ndarray, bins: int) -> np.ndarray:
    """Monotone level index of scores in [0, 1] (clipped): log-spaced in [LOG_MIN,
    LOG_FLOOR), then `bins` equal levels up to 1; `_LOG_LEVELS + bins` levels in all."""
    s = np.clip(np.asarray(scores, np.float64), LOG_MIN, 1.0)
    low = (s.astype(np.float32).view(np.uint32).astype(np.int64) >> _LOG_SHIFT) - _LOG_BASE
    high = _LOG_LEVELS + ((s - LOG_FLOOR) * (bins / (1.0 - LOG_FLOOR))).astype(np.int64)
    return np.where(s < LOG_FLOOR, np.clip(low, 0, _LOG_LEVELS - 1), np.minimum(high, _LOG_LEVELS + bins - 1))


class PixelAccumulator:
    """Streams (map, mask) pairs into `Counts` for exact-protocol pixel metrics.

    `bins > 0`: fixed levels over [0, 1] (scores clipped; see `score_levels`), O(bins)
    memory whatever the number of pixels. `bins == 0`: keeps every pixel's exact score.
    """

    def __init__(self, bins: int = 1 << 20) -> None:
        self.bins = bins
        self.regions = 0
        if bins > 0:
            self.levels = _LOG_LEVELS + bins
            self.neg = np.zeros(self.levels)
            self.pos = np.zeros(self.levels)
            self.weight = np.zeros(self.levels)
        else:
            self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, score_map: np.ndarray, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        weights, n = region_weights(mask)
        self.regions += n
        scores = np.asarray(score_map, np.float64).ravel()
        if self.bins == 0:
            self.parts.append((scores, mask.ravel(), weights.ravel()))
            return
        idx = score_levels(scores, self.bins)
        flat = mask.ravel()
        self.neg += np.bincount(idx[~flat], minlength=self.levels)
        self.pos += np.bincount(idx[flat], minlength=self.levels)
        self.weight += np.bincount(idx, weights=weights.ravel(), minlength=self.levels)

    def counts(self) -> Counts:
        if self.bins > 0:
            return Counts(self.neg, self.pos, self.weight, self.regions)
        if not self.parts:
            return counts_from_scores(np.zeros(0), np.zeros(0, bool))
        scores, labels, weights = (np.concatenate(p) for p in zip(*self.parts))
        return counts_from_scores(scores, labels, weights, self.regions)


class OfficialProAccumulator:
    """cflow-ad PRO on min-max normalised maps: `binary = map > th` for 200 even thresholds
    in [0, 1), streamed as counts of pixels above each threshold (no per-threshold loop)."""

    def __init__(self, steps: int = 200) -> None:
        self.thresholds = np.arange(0.0, 1.0, 1.0 / steps)
        self.neg_above = np.zeros(len(self.thresholds) + 1)
        self.pro_above = np.zeros(len(self.thresholds) + 1)
        self.negatives = 0
        self.regions = 0

    def add(self, score_map: np.ndarray, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        weights, n = region_weights(mask)
        self.regions += n
        # pixel counts for thresholds 0..idx-1, since score > th_i exactly for i < idx
        idx = np.searchsorted(self.thresholds, np.asarray(score_map, np.float64).ravel(), "left")
        size = len(self.thresholds) + 1
        self.neg_above += np.bincount(idx[~mask.ravel()], minlength=size)
        self.pro_above += np.bincount(idx, weights=weights.ravel(), minlength=size)
        self.negatives += int((~mask).sum())

    def value(self, fpr_limit: float = 0.3) -> float:
        if self.regions == 0 or self.negatives == 0:
            return float("nan")
        above = lambda h: np.cumsum(h[::-1])[::-1][1:]  # noqa: E731 - a one-line helper for the two sums below (count with idx > i)
        fpr = above(self.neg_above) / self.negatives
        pro = above(self.pro_above) / self.regions
        return official_pro(fpr, pro, fpr_limit)


@dataclass(frozen=True)
class MetricConfig:
    """How maps become the seven numbers (see the module docstring for the protocols)."""

    protocol: Protocol = option(
        "exact", "exact (default) | official (MetaUAS/cflow-ad code, for parity with published tables).", Panel.METRICS
    )
    image_score: ImageScore = option(  # max | topk (mean of the `topk` highest pixels)
        "max", "Image score from the map: max (paper) | topk (mean of the --score-topk highest pixels).", Panel.METRICS
    )
    topk: int = option(100, "Pixels averaged by --image-score topk.", Panel.METRICS, names=("--score-topk",))
    pixel_bins: int = option(  # 0 = exact distinct scores (memory grows with pixels)
        1 << 20,
        "Pixel-metric score levels: this many even bins over [2^-8, 1] plus log-spaced ones below (memory stays "
        "bounded at any pixel count; max error 2.5e-7 measured); 0 = every distinct score (exact, memory grows "
        "with pixels).",
        Panel.METRICS,
    )
    fpr_limit: float = 0.3


def image_score(score_map: np.ndarray, cfg: MetricConfig) -> float:
    """The image-level anomaly score of one map: its max (paper) or mean of top-k pixels."""
    flat = np.asarray(score_map, np.float64).ravel()
    if cfg.image_score == "max":
        return float(flat.max())
    k = min(cfg.topk, flat.size)
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def _flip(value: float, cfg: MetricConfig) -> float:
    """The official code reports 1 - AUROC below 0.5; the exact protocol never does."""
    if cfg.protocol == "official" and value < 0.5:
        return 1.0 - value
    return value


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def f1_at(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    labels: Sequence[int],
    threshold: float,
    cfg: MetricConfig = MetricConfig(),
) -> dict[str, float]:
    """Image and pixel F1 of one fixed decision threshold (what a deployed model reaches,
    beside F1max, the best any threshold could): an image is anomalous when its image score
    exceeds it, a pixel when its value does. Masks are handled as in `compute_metrics`."""
    predicted = np.array([image_score(m, cfg) > threshold for m in maps])
    truth = np.array(labels, bool)
    tp = fp = fn = 0.0
    for score_map, mask, label in zip(maps, masks, labels, strict=True):
        if mask is None and label:
            continue
        above = np.asarray(score_map) > threshold
        gt = np.zeros(above.shape, bool) if mask is None else np.asarray(mask, bool)
        tp, fp, fn = tp + (above & gt).sum(), fp + (above & ~gt).sum(), fn + (~above & gt).sum()
    return {
        "threshold": float(threshold),
        "I-F1@t": _f1((predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()),
        "P-F1@t": _f1(tp, fp, fn),
    }


def compute_metrics(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    labels: Sequence[int] | None = None,
    cfg: MetricConfig = MetricConfig(),
    curves: dict | None = None,
) -> dict[str, float]:
    """The seven metrics of one class from in-memory maps (HxW floats) and masks (HxW bool).

    `labels` default to "mask has a defect pixel". A mask of None counts as empty for a
    normal image (label 0) and, for an anomalous one, leaves the image out of the pixel
    metrics (its image score still counts). NaN where a metric is undefined. A `curves`
    dict is filled with the curves behind them (`curve_points`), from the same counts.
    """
    if labels is None:
        labels = [int(m is not None and bool(np.any(m))) for m in masks]
    lo, hi = 0.0, 1.0
    if cfg.protocol == "official":  # per-class min-max normalisation of all maps
        lo = min(float(np.min(m)) for m in maps)
        hi = max(float(np.max(m)) for m in maps)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    scores, pixels, pro = [], PixelAccumulator(cfg.pixel_bins), OfficialProAccumulator()
    for score_map, mask, label in zip(maps, masks, labels, strict=True):
        m = (np.asarray(score_map, np.float64) - lo) * scale if cfg.protocol == "official" else score_map
        scores.append(image_score(m, cfg))
        if mask is None and label:
            continue
        gt = np.zeros(np.shape(m), bool) if mask is None else np.asarray(mask, bool)
        pixels.add(m, gt)
        if cfg.protocol == "official":
            pro.add(m, gt)
    img = counts_from_scores(np.array(scores), np.array(labels, bool))
    pix = pixels.counts()
    if curves is not None:
        curves.update(curve_points(img, pix, cfg.fpr_limit))
    return {
        "I-AUROC": _flip(auroc(img), cfg),
        "I-AP": average_precision(img),
        "I-F1max": f1_max(img),
        "P-AUROC": _flip(auroc(pix), cfg),
        "P-AP": average_precision(pix),
        "P-F1max": f1_max(pix),
        "P-AUPRO": pro.value(cfg.fpr_limit) if cfg.protocol == "official" else aupro(pix, cfg.fpr_limit),
    }


def _thin(x: np.ndarray, y: np.ndarray, step: float = 0.003) -> list[tuple[float, float]]:
    """The points of a curve, keeping one per `step` of path length (a pixel curve has a
    point per score level, up to a million): enough to draw, small enough to embed."""
    if len(x) == 0:
        return []
    travelled = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))])
    _, keep = np.unique(np.floor(travelled / step), return_index=True)
    keep = np.union1d(keep, [len(x) - 1])
    return [(round(float(x[i]), 5), round(float(y[i]), 5)) for i in keep]


def curve_points(img: Counts, pix: Counts, fpr_limit: float = 0.3) -> dict[str, list[tuple[float, float]]]:
    """What the report draws, from the metrics' own counts: image ROC (FPR, TPR), pixel
    PR (recall, precision) and PRO (pixel FPR up to `fpr_limit`, per-region overlap);
    [] where a curve is undefined (one class only)."""
    out: dict[str, list[tuple[float, float]]] = {"roc": [], "pr": [], "pro": []}
    fp, tp, _ = img.descending()
    if len(fp) and fp[-1] > 0 and tp[-1] > 0:
        out["roc"] = _thin(np.concatenate([[0.0], fp / fp[-1]]), np.concatenate([[0.0], tp / tp[-1]]))
    if pix.pos.sum() > 0:
        precision, recall = _precision_recall(pix)
        out["pr"] = _thin(recall, precision)
    fp, _, pro_sum = pix.descending()
    if pix.regions and len(fp) and fp[-1] > 0:
        fpr, pro = fp / fp[-1], pro_sum / pix.regions
        end = int(np.searchsorted(fpr, fpr_limit, side="right"))
        out["pro"] = _thin(np.concatenate([[0.0], fpr[:end]]), np.concatenate([[0.0], pro[:end]]))
    return out
