"""The resolution jitter (`--resample-jitter`, issue 20): a training image stored again at
0.5-1x its resolution and brought back is the same content, so the pair's mask does not
change; off, it draws nothing, so earlier runs' augmentation streams stay as they were."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from make_data import make_pair

from metauas.errors import UserError
from metauas.trainer.augment import AugmentConfig, apply_resample, augment_pair, draw_params

ONLY_RESAMPLE = dict(swap=0.0, affine=0.0, jitter=0.0, resample_jitter=1.0)


def _pair(seed: int, size: int = 64) -> dict:
    prompt, query, mask = make_pair(np.random.default_rng(seed), size)
    return {"prompt": prompt, "query": query, "mask": (mask > 0).astype(np.uint8)}


def test_each_image_is_resampled_apart_and_the_mask_stays():
    cfg, rng = AugmentConfig(**ONLY_RESAMPLE), np.random.default_rng(0)
    for seed in range(6):
        pair = _pair(seed)
        params = draw_params(np.random.default_rng([seed]), cfg, (64, 64), 64)
        out = augment_pair(pair, 64, cfg, np.random.default_rng([seed]))
        (fp, back_p), (fq, back_q) = params.resample
        assert 0.5 <= fp <= 1 and 0.5 <= fq <= 1 and fp != fq
        np.testing.assert_array_equal(out["query"], apply_resample(pair["query"], (fq, back_q)))
        np.testing.assert_array_equal(out["prompt"], apply_resample(pair["prompt"], (fp, back_p)))
        np.testing.assert_array_equal(out["mask"], pair["mask"])
        assert out["query"].shape == pair["query"].shape
        assert np.abs(out["query"].astype(int) - pair["query"]).mean() > 0.5  # detail was lost
    backs = {draw_params(rng, cfg, (64, 64), 64).resample[0][1] for _ in range(40)}
    assert backs == {cv2.INTER_LINEAR, cv2.INTER_CUBIC}


def test_a_resampled_image_keeps_its_content():
    """Area down and back up is a low-pass: a smooth image comes back nearly as it was."""
    y, x = np.mgrid[0:96, 0:80]
    smooth = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 11), 0 * x + 90], axis=-1)
    smooth = smooth.astype(np.uint8)
    back = apply_resample(smooth, (0.5, cv2.INTER_CUBIC))
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 2


def test_it_fires_at_its_rate_and_is_off_by_default():
    """Off is the default (and draws nothing: test_augment_paths' byte-for-byte test of the
    default config against the original augmentation covers the stream)."""
    assert draw_params(np.random.default_rng(4), AugmentConfig(), (64, 64), 64).resample == (None, None)
    rng, on = np.random.default_rng(9), AugmentConfig(resample_jitter=0.5)
    fired = [r is not None for _ in range(400) for r in draw_params(rng, on, (64, 64), 64).resample]
    assert 0.4 < np.mean(fired) < 0.6
    with pytest.raises(UserError, match="probability"):
        AugmentConfig(resample_jitter=1.5)
