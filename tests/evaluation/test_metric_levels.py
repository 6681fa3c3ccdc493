"""Binned pixel metrics keep the ranking of saturated sigmoid maps (bounded-memory path)."""

from __future__ import annotations

import numpy as np

from metauas.evaluation.metrics import PixelAccumulator, aupro, auroc, average_precision, f1_max, score_levels


def test_levels_are_monotone_over_many_decades() -> None:
    rng = np.random.default_rng(0)
    s = np.sort(np.concatenate([rng.random(20000), 10.0 ** rng.uniform(-15, 0, 20000), [0.0, 2**-8, 1.0]]))
    idx = score_levels(s, 1 << 16)
    assert (np.diff(idx) >= 0).all()
    # distinct decades never share a level (log-spaced levels below 2^-8)
    assert len(np.unique(score_levels(10.0 ** -np.arange(1, 12), 1 << 16))) == 11


def test_binned_matches_exact_on_saturated_probabilities() -> None:
    """A confident model puts most pixels below 1e-6: linear bins over [0, 1] would tie
    them all (P-AUROC near 0.5); the log-spaced low levels keep them apart."""
    rng = np.random.default_rng(1)
    masks = np.zeros((12, 48, 48), bool)
    for i in range(6):
        y, x = rng.integers(8, 40, 2)
        masks[i, y - 5 : y + 5, x - 4 : x + 4] = True
    logits = rng.normal(-18.0, 2.5, masks.shape) + masks * rng.uniform(0, 6, (12, 1, 1))
    probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
    assert np.median(probs) < 1e-6
    exact, binned = PixelAccumulator(0), PixelAccumulator(1 << 16)
    for m, g in zip(probs, masks):
        exact.add(m, g)
        binned.add(m, g)
    for metric in (auroc, average_precision, f1_max, aupro):
        assert abs(metric(binned.counts()) - metric(exact.counts())) < 1e-3, metric.__name__
    assert auroc(exact.counts()) > 0.7  # real signal, so tying the low pixels would show
