"""Prompt-only training augmentation: only the prompt changes, the mask keeps only change the
prompt still shows, seeds repeat, and the defaults draw nothing."""

import cv2
import numpy as np
import pytest

from metauas.errors import UserError
from metauas.trainer.augment import IDENTITY, AugmentConfig, augment_pair, augment_prompt

PLAIN = dict(swap=0.0, affine=0.0, jitter=0.0)  # no warp: query pixel y shows prompt pixel y


def _pair(size=48):
    rng = np.random.default_rng(7)
    prompt = rng.integers(1, 255, (size, size, 3), dtype=np.uint8)  # no pixel is 0 (= the border)
    query = prompt.copy()
    query[8:40, 8:40] = 250
    mask = np.zeros((size, size), np.uint8)
    mask[8:40, 8:40] = 1
    return {"prompt": prompt, "query": query, "mask": mask}


def _run(pair, seed=0, **options):
    return augment_pair(pair, 48, AugmentConfig(**{**PLAIN, **options}), np.random.default_rng(seed))


@pytest.mark.parametrize("option", ["prompt_rot90", "prompt_rotate", "prompt_flip", "prompt_dropout"])
@pytest.mark.parametrize("warp", [0.0, 1.0])
def test_each_option_changes_only_the_prompt_and_repeats_for_a_seed(option, warp):
    pair = _pair()
    for seed in range(5):
        base = _run(pair, seed, affine=warp)
        out = _run(pair, seed, affine=warp, **{option: 1.0})
        assert np.array_equal(out["query"], base["query"])
        assert not np.array_equal(out["prompt"], base["prompt"])
        if option == "prompt_rotate":  # may only drop change that left the prompt
            assert np.all(out["mask"] <= base["mask"])
        else:
            assert np.array_equal(out["mask"], base["mask"])
        again = _run(pair, seed, affine=warp, **{option: 1.0})
        assert all(np.array_equal(out[k], again[k]) for k in ("prompt", "query", "mask"))


def test_rot90_and_flip_keep_all_prompt_content():
    pair = _pair()
    base = _run(pair)["prompt"]
    for seed in range(6):
        rotated = _run(pair, seed, prompt_rot90=1.0)["prompt"]
        assert any(np.array_equal(rotated, np.rot90(base, k)) for k in (1, 2, 3))
        flipped = _run(pair, seed, prompt_flip=1.0)["prompt"]
        assert any(np.array_equal(flipped, np.flip(base, axis)) for axis in (0, 1))


def test_dropout_fills_rectangles_with_the_prompts_mean_colour():
    pair = _pair()
    base = _run(pair)["prompt"]
    out = _run(pair, 3, prompt_dropout=1.0)["prompt"]
    changed = np.any(out != base, axis=2)
    mean = base.reshape(-1, 3).mean(0).round()
    assert 0 < changed.mean() < 0.5
    assert np.all(out[changed] == mean)


def _source_pixels(image, where=None):
    """Which source pixels an image shows: colours code the source (x, y), blue 128 marks
    pixels fully inside the warped source (bilinear edges with the black border are less)."""
    size = image.shape[0]
    p = image.astype(int)
    full = (p[..., 2] >= 120) & (True if where is None else where)
    shown = np.zeros((size, size), bool)
    shown[
        np.clip(np.round((p[..., 1][full] - 3) / 5).astype(int), 0, size - 1),
        np.clip(np.round((p[..., 0][full] - 3) / 5).astype(int), 0, size - 1),
    ] = True
    return shown


@pytest.mark.parametrize("warp", [0.0, 1.0])
def test_rotation_keeps_exactly_the_change_whose_content_the_prompt_still_shows(warp):
    """Prompt and query are the same coordinate-coloured image, all 'changed': after the
    warps and the prompt rotation, the kept mask must be the content shown by both."""
    size = 48
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 5 + 3, yy * 5 + 3, np.full_like(xx, 128)], -1).astype(np.uint8)
    pair = {"prompt": image, "query": image.copy(), "mask": np.ones((size, size), np.uint8)}
    cropped = []
    for seed in range(10):
        out = _run(pair, seed, affine=warp, scale=(1.0, 1.5), prompt_rotate=1.0)
        prompt, query = _source_pixels(out["prompt"]), _source_pixels(out["query"])
        kept = _source_pixels(out["query"], out["mask"] > 0)
        prompt_closed = cv2.dilate(prompt.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # resampling holes
        assert (kept & ~prompt_closed).sum() <= 2  # kept change is shown by the prompt
        assert (prompt & query & ~kept).sum() <= 20  # content in both stays (bar edge pixels)
        cropped.append(out["mask"].mean() < _run(pair, seed, affine=warp, scale=(1.0, 1.5))["mask"].mean())
    assert sum(cropped) >= 5  # rotations of 30..270 degrees usually crop some change


def test_defaults_are_off_and_draw_no_randomness():
    cfg = AugmentConfig()
    assert (cfg.prompt_rot90, cfg.prompt_rotate, cfg.prompt_flip, cfg.prompt_dropout) == (0, 0, 0, 0)
    pair = _pair()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    prompt, mask = augment_prompt(pair["prompt"], pair["mask"], IDENTITY, cfg, rng)
    assert rng.bit_generator.state == state
    assert np.array_equal(prompt, pair["prompt"]) and np.array_equal(mask, pair["mask"])
    with pytest.raises(UserError, match="`prompt_rotate` is a probability"):
        AugmentConfig(prompt_rotate=-0.1)
