"""The augmentation's three implementations draw and produce the same thing.

- the OpenCV path after its draws moved into `draw_params` reproduces the original
  single-function version (tests/trainer/legacy_augment.py) byte for byte, so the random
  stream and every output are unchanged;
- the device path (`device_augment.augment_batch`, batched torch ops, run here on the
  CPU) applies the same draws and matches the OpenCV output up to rounding: the same
  warps, visibility masks, prompt options and colour jitter.
"""

from __future__ import annotations

import legacy_augment
import numpy as np
import pytest
from make_data import make_pair

from metauas.trainer.augment import AugmentConfig, augment_pair, draw_params

ALL_ON = dict(prompt_rot90=0.5, prompt_rotate=0.5, prompt_flip=0.5, prompt_dropout=0.5)


def _pairs(n: int, size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt, query, mask = make_pair(rng, size)
        out.append({"prompt": prompt, "query": query, "mask": (mask > 0).astype(np.uint8)})
    return out


@pytest.mark.parametrize("options", [{}, ALL_ON, {"swap": 1.0, "affine": 1.0, "jitter": 0.3}])
@pytest.mark.parametrize("source, size", [(64, 64), (96, 64)])
def test_opencv_path_is_the_original_byte_for_byte(options, source, size):
    cfg = AugmentConfig(**options)
    new_rng, old_rng = np.random.default_rng(7), np.random.default_rng(7)
    for pair in _pairs(12, source):
        new, old = augment_pair(pair, size, cfg, new_rng), legacy_augment.augment_pair(pair, size, cfg, old_rng)
        for key in ("prompt", "query", "mask"):
            np.testing.assert_array_equal(new[key], old[key])
    assert new_rng.random() == old_rng.random()  # the streams stayed in step


@pytest.mark.parametrize(
    "options", [{}, ALL_ON, {"swap": 1.0, "affine": 1.0, "jitter": 0.3}, {"affine": 1.0, "resample_jitter": 1.0}]
)
def test_device_path_matches_the_opencv_path_on_the_same_draws(options):
    """Same parameters, two implementations: images within rounding (mean |diff| under one
    grey level; the hue step goes through OpenCV's 8-bit HSV in one path and floats in the
    other), masks (warp, visibility rule, prompt rotation) equal but for a few pixels."""
    import torch

    from metauas.trainer.augment import apply_params, resample_sources
    from metauas.trainer.device_augment import augment_batch, pack_params

    cfg, size = AugmentConfig(**options), 64
    pairs = _pairs(24, size, seed=5)
    rng = np.random.default_rng(11)
    params = [draw_params(rng, cfg, (size, size), size) for _ in pairs]
    cpu = [apply_params(p, size, q) for p, q in zip(pairs, params)]
    sources = [resample_sources(p, q) for p, q in zip(pairs, params)]  # the workers' part, as stream.py
    batch = {k: torch.from_numpy(np.stack([p[k] for p in sources])) for k in ("prompt", "query", "mask")}
    prompt, query, mask = augment_batch({**batch, **pack_params(params, size)}, "cpu")
    for ours, key in ((prompt, "prompt"), (query, "query")):
        diff = np.abs(np.rint(ours.permute(0, 2, 3, 1).numpy() * 255) - np.stack([c[key] for c in cpu]))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 6, (key, diff.mean(), np.percentile(diff, 99))
    expected = np.stack([c["mask"] for c in cpu])
    assert (mask[:, 0].numpy() != expected).mean() < 2e-3 and expected.any()
    assert prompt.shape == (24, 3, size, size) and mask.shape == (24, 1, size, size)


def test_draws_follow_the_configured_probabilities():
    """Over many pairs, each option fires at its rate and angles stay in their range."""
    cfg = AugmentConfig(**ALL_ON)
    rng = np.random.default_rng(3)
    params = [draw_params(rng, cfg, (64, 64), 64) for _ in range(400)]
    swaps, warps = sum(p.swap for p in params), sum(p.to_prompt is not None for p in params)
    assert 160 < swaps < 240 and 160 < warps < 240  # p = 0.5 each
    assert 0.4 < np.mean([p.prompt.rotate is not None for p in params]) < 0.6
    angles = [p.prompt.rotate for p in params if p.prompt.rotate is not None]
    assert 30 <= min(angles) and max(angles) <= 270
