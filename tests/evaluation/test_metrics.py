"""Metric functions against scikit-learn, hand-computed AUPRO cases and the official code."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from metauas.evaluation.metrics import (
    MetricConfig,
    OfficialProAccumulator,
    PixelAccumulator,
    aupro,
    auroc,
    average_precision,
    compute_metrics,
    counts_from_scores,
    f1_max,
    pixel_auroc_ap,
)


def _sk_f1max(labels, scores):
    p, r, _ = precision_recall_curve(labels, scores)
    return np.max(2 * p * r / np.maximum(p + r, 1e-12))


@pytest.mark.parametrize("decimals", [None, 2])  # continuous scores, and heavy ties
def test_exact_curves_match_sklearn(decimals):
    rng = np.random.default_rng(0 if decimals is None else 1)
    for _ in range(5):
        scores = rng.random(5000)
        labels = rng.random(5000) < 0.2 + 0.5 * scores  # informative but noisy
        if decimals is not None:
            scores = scores.round(decimals)
        c = counts_from_scores(scores, labels)
        assert auroc(c) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert average_precision(c) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
        assert f1_max(c) == pytest.approx(_sk_f1max(labels, scores), abs=1e-6)


def test_binned_accumulator_equals_exact_on_grid_scores_and_is_close_otherwise():
    rng = np.random.default_rng(2)
    maps = [rng.random((32, 32)) for _ in range(4)]
    masks = [rng.random((32, 32)) < 0.1 for _ in range(4)]
    grid = [np.floor(m * 1024) / 1024 + 1e-6 for m in maps]  # inside bins of a 1024 grid
    exact, binned = PixelAccumulator(0), PixelAccumulator(1024)
    for m, g in zip(grid, masks):
        exact.add(m, g)
        binned.add(m, g)
    for fn in (auroc, average_precision, f1_max, aupro):
        assert fn(binned.counts()) == pytest.approx(fn(exact.counts()), abs=1e-9)
    exact, fine = PixelAccumulator(0), PixelAccumulator(1 << 20)
    for m, g in zip(maps, masks):
        exact.add(m, g)
        fine.add(m, g)
    assert auroc(fine.counts()) == pytest.approx(auroc(exact.counts()), abs=1e-4)


def test_aupro_hand_computed_single_region():
    # region: 0.9, 0.5; normals: 0.8 and nine at 0.1. Curve (0,0)(0,.5)(.1,.5)(.1,1)(1,1):
    # area to FPR 0.3 = 0.1 * 0.5 + 0.2 * 1 = 0.25, normalised 0.25 / 0.3.
    scores = np.array([0.9, 0.5, 0.8] + [0.1] * 9)
    mask = np.array([1, 1] + [0] * 10, bool)
    acc = PixelAccumulator(0)
    acc.add(scores.reshape(1, -1), mask.reshape(1, -1))
    assert aupro(acc.counts()) == pytest.approx(0.25 / 0.3, abs=1e-12)


def test_aupro_averages_regions_not_pixels():
    # region A: 1 px at 0.9; region B: 3 px at 0.2 (not touching A); 10 normal px at 0.5.
    # PRO is 0.5 from FPR 0 to 1: normalised area 0.5 (pixel TPR would give 0.25).
    scores = np.full((3, 6), 0.5)
    mask = np.zeros((3, 6), bool)
    scores[0, 0], mask[0, 0] = 0.9, True
    scores[2, 3:6], mask[2, 3:6] = 0.2, True
    scores[1, :], scores[0, 1:] = 0.5, 0.5
    acc = PixelAccumulator(0)
    acc.add(scores, mask)
    c = acc.counts()
    assert c.regions == 2 and c.neg.sum() == 14
    assert aupro(c) == pytest.approx(0.5, abs=1e-12)


def _official_pro_reference(masks, amaps, max_step=200, expect_fpr=0.3):
    """The MetaUAS / cflow-ad loop, verbatim in substance (skimage regions, > threshold)."""
    from skimage import measure
    from sklearn.metrics import auc

    binary = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    for th in np.arange(min_th, max_th, delta):
        binary[amaps <= th], binary[amaps > th] = 0, 1
        pro = []
        for b, mask in zip(binary, masks):
            for region in measure.regionprops(measure.label(mask)):
                pro.append(b[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        inverse = 1 - masks
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(pro))
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    f = fprs[keep]
    return auc((f - f.min()) / (f.max() - f.min()), pros[keep])


def test_official_pro_matches_the_reference_loop():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 24, 24), np.uint8)
    masks[0, 3:8, 3:9] = 1
    masks[0, 15:20, 12:14] = 1
    masks[1, 10:18, 10:18] = 1
    amaps = rng.random((3, 24, 24)) * 0.6 + masks * rng.random((3, 24, 24)) * 0.5
    amaps = (amaps - amaps.min()) / (amaps.max() - amaps.min())  # the official min-max
    acc = OfficialProAccumulator()
    for a, m in zip(amaps, masks):
        acc.add(a, m)
    assert acc.value() == pytest.approx(_official_pro_reference(masks, amaps), abs=1e-6)


def test_official_flips_auroc_below_half_and_exact_never_does():
    maps = [np.full((4, 4), 0.9), np.full((4, 4), 0.1)]
    masks = [None, np.ones((4, 4), bool)]  # the anomalous image scores lowest
    exact = compute_metrics(maps, masks, [0, 1])
    official = compute_metrics(maps, masks, [0, 1], MetricConfig(protocol="official"))
    assert exact["I-AUROC"] == 0.0 and official["I-AUROC"] == 1.0


def test_compute_metrics_perfect_and_missing_masks():
    rng = np.random.default_rng(4)
    masks, maps = [], []
    for i in range(6):
        m = np.zeros((16, 16), bool)
        if i % 2:
            m[4:8, 4:9] = True
        masks.append(m if i % 2 else None)
        maps.append(np.where(m, 0.9, 0.1) + rng.random((16, 16)) * 0.05)
    out = compute_metrics(maps, masks)
    assert all(v == pytest.approx(1.0) for v in out.values())
    # an anomalous image without a mask is left out of pixel metrics, kept for image ones
    out2 = compute_metrics(maps, [*masks[:5], None], [0, 1, 0, 1, 0, 1])
    assert out2["I-AUROC"] == 1.0 and out2["P-AUROC"] == pytest.approx(1.0)
    topk = compute_metrics(maps, masks, cfg=MetricConfig(image_score="topk", topk=5))
    assert topk["I-AUROC"] == 1.0


def test_validation_helper_keeps_its_contract():
    probs = np.array([[0.1, 0.8], [0.3, 0.9]])
    masks = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert pixel_auroc_ap(probs, masks) == (1.0, 1.0)
    assert all(np.isnan(v) for v in pixel_auroc_ap(probs, np.zeros((2, 2))))
    rng = np.random.default_rng(3)  # quantised scores: many ties, as sigmoid maps have
    scores = rng.integers(0, 50, (4, 32, 32)) / 50.0
    labels = rng.random((4, 32, 32)) < 0.2 + 0.5 * scores
    auroc_, ap = pixel_auroc_ap(scores, labels.astype(np.float32))
    assert abs(auroc_ - roc_auc_score(labels.ravel(), scores.ravel())) < 1e-12
    assert abs(ap - average_precision_score(labels.ravel(), scores.ravel())) < 1e-12
    torch = pytest.importorskip("torch")  # validation hands it tensors
    assert pixel_auroc_ap(torch.from_numpy(scores), torch.from_numpy(labels)) == (auroc_, ap)


def test_bench_metrics_command_reports_every_method(capsys):
    from metauas.cli import main

    assert main(["bench", "metrics", "--images", "6", "--bins", "4096", "--no-sklearn"]) == 0
    out = capsys.readouterr().out
    assert "exact (bins=0)" in out and "binned (4096 bins)" in out and "scikit-learn" not in out
    row = next(line for line in out.splitlines() if line.startswith("| binned"))
    assert float(row.split("|")[4]) < 1e-3  # max abs diff vs exact
