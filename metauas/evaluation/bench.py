"""`metauas bench metrics`: streaming pixel metrics vs exact ones vs scikit-learn.

Synthetic class: 256 x 256 maps with elliptical defects on a third of the images and
scores that are noisy (and, like sigmoid outputs, crowded near 0). Reports, per method,
wall time, peak traced memory and the largest difference to the exact metrics, so
docs/evaluation.md can state what `--pixel-bins` costs in accuracy.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass

import cv2
import numpy as np

from metauas.errors import UserError
from metauas.evaluation.metrics import PixelAccumulator, aupro, auroc, average_precision, f1_max

SIDE = 256


@dataclass(frozen=True)
class MetricBenchConfig:
    images: int = 200
    bins: tuple[int, ...] = (1 << 16, 1 << 20)
    seed: int = 0
    sklearn: bool = True


def synthetic_class(n: int, seed: int):
    """Yield (map, mask) pairs, generated on the fly so the input costs no memory."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        mask = np.zeros((SIDE, SIDE), np.uint8)
        if i % 3 == 0:
            for _ in range(rng.integers(1, 4)):
                c = tuple(int(v) for v in rng.integers(20, SIDE - 20, 2))
                cv2.ellipse(mask, c, tuple(int(v) for v in rng.integers(3, 25, 2)), 0, 0, 360, 1, -1)
        logits = rng.normal(-4.0, 1.5, (SIDE, SIDE)) + 4.5 * mask * rng.random((SIDE, SIDE))
        yield (1 / (1 + np.exp(-logits))).astype(np.float32), mask.astype(bool)


def _measure(fn):
    tracemalloc.start()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, seconds, peak


def _accumulate(cfg: MetricBenchConfig, bins: int) -> dict[str, float]:
    acc = PixelAccumulator(bins)
    for m, g in synthetic_class(cfg.images, cfg.seed):
        acc.add(m, g)
    c = acc.counts()
    return {"P-AUROC": auroc(c), "P-AP": average_precision(c), "P-F1max": f1_max(c), "P-AUPRO": aupro(c)}


def _sklearn(cfg: MetricBenchConfig) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    maps, masks = zip(*synthetic_class(cfg.images, cfg.seed))
    scores, labels = np.concatenate([m.ravel() for m in maps]), np.concatenate([g.ravel() for g in masks])
    return {"P-AUROC": roc_auc_score(labels, scores), "P-AP": average_precision_score(labels, scores)}


def run_metric_bench(cfg: MetricBenchConfig) -> list[dict]:
    """Rows {method, seconds, peak_mib, max_abs_diff, metrics}; the exact path is the reference."""
    if cfg.sklearn:
        try:
            import sklearn  # noqa: F401 - only asks whether the reference is installed
        except ImportError:
            raise UserError("scikit-learn is not installed: pip install scikit-learn, or turn `sklearn` off") from None
    exact, seconds, peak = _measure(lambda: _accumulate(cfg, 0))
    rows = [
        {
            "method": "exact (bins=0)",
            "seconds": seconds,
            "peak_mib": peak / 2**20,
            "max_abs_diff": 0.0,
            "metrics": exact,
        }
    ]
    for bins in cfg.bins:
        value, seconds, peak = _measure(lambda b=bins: _accumulate(cfg, b))
        diff = max(abs(value[k] - exact[k]) for k in value)
        rows.append(
            {
                "method": f"binned ({bins} bins)",
                "seconds": seconds,
                "peak_mib": peak / 2**20,
                "max_abs_diff": diff,
                "metrics": value,
            }
        )
    if cfg.sklearn:
        value, seconds, peak = _measure(lambda: _sklearn(cfg))
        diff = max(abs(value[k] - exact[k]) for k in value)
        rows.append(
            {
                "method": "scikit-learn (AUROC+AP only)",
                "seconds": seconds,
                "peak_mib": peak / 2**20,
                "max_abs_diff": diff,
                "metrics": value,
            }
        )
    return rows
