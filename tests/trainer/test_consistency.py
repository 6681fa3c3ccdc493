"""The consistency loss (`train --consistency`, issue 20): each query is shot a second
time (stored again smaller, with a grey level or two of noise) and the model is trained to
give both shots the same map and the same score; drawn from the run's seed and step, so a
resumed run trains on the same second shots as an uninterrupted one."""

from __future__ import annotations

import torch
from test_train import NO_AUGMENT, _config, _same

from metauas.model.checkpoint import read_checkpoint
from metauas.trainer.device_augment import second_shot, with_second_shot
from metauas.trainer.losses import consistency_loss
from metauas.trainer.train import train


def _images() -> torch.Tensor:
    """Eight images of whole grey levels with edges (what a resampling changes)."""
    x = torch.full((8, 3, 32, 32), 128 / 255)
    x[:, :, 8:20, 5:17] = 1.0
    x[:, :, 22:, 20:] = 0.0
    return x


def test_the_second_shot_is_a_slightly_different_rendering_fixed_by_its_seed():
    images = _images()
    shot = second_shot(images, key=[7, 0, 1])
    assert shot.shape == images.shape and torch.equal(shot, second_shot(images, key=[7, 0, 1]))
    assert not torch.equal(shot, second_shot(images, key=[7, 0, 2]))  # the next step
    levels = shot * 255
    assert torch.equal(levels, levels.round()) and shot.min() >= 0 and shot.max() <= 1
    diff = (shot - images).abs() * 255
    assert diff.mean() < 6  # the same scene: a few grey levels on average, more at edges
    assert diff.flatten(1).amax(1).max() > 20  # some images were resampled: their edges moved


def test_the_queries_are_doubled_with_the_same_masks_and_their_prompts_once():
    prompt, query = _images(), _images().flip(-1)
    masks = torch.zeros(8, 1, 32, 32)
    masks[:, :, :4] = 1
    p, q, m = with_second_shot(prompt, query, masks, True, key=[1, 0, 0])
    assert torch.equal(p, prompt) and torch.equal(m, torch.cat([masks, masks]))  # the model repeats prompts
    assert torch.equal(q[:8], query) and not torch.equal(q[8:], query)
    assert with_second_shot(prompt, query, masks, False, key=[1, 0, 0]) == (prompt, query, masks)  # off


def test_consistency_is_zero_for_equal_maps_and_counts_the_score_apart():
    logits = torch.randn(4, 1, 8, 8)
    assert consistency_loss(torch.cat([logits, logits])).item() == 0
    moved = logits.clone()
    moved[:, :, 0, 0] = 50.0  # one pixel per image: the map barely moves, its maximum does
    probs, new = torch.sigmoid(logits).flatten(1), torch.sigmoid(moved).flatten(1)
    expected = (probs - new).abs().mean() + (probs.amax(1) - new.amax(1)).abs().mean()
    assert torch.isclose(consistency_loss(torch.cat([logits, moved])), expected)
    # --consistency-max 0: the maps alone, the maxima free to move apart
    maps_only = (probs - new).abs().mean()
    assert torch.isclose(consistency_loss(torch.cat([logits, moved]), max_weight=0.0), maps_only)


def test_a_run_with_consistency_logs_it_and_resumes_on_the_same_shots(shard_dir, tmp_path):
    whole, halves, plain = tmp_path / "whole", tmp_path / "halves", tmp_path / "plain"
    options = dict(lr=3e-3, augment=NO_AUGMENT, min_lr_ratio=1.0)
    train(_config(shard_dir, whole, steps=4, save_every=2, consistency=1.0, **options))
    train(_config(shard_dir, halves, steps=2, save_every=2, consistency=1.0, **options))
    train(_config(shard_dir, halves, steps=4, save_every=2, resume=True, consistency=1.0, **options))
    train(_config(shard_dir, plain, steps=4, save_every=2, **options))
    weights = {run: read_checkpoint(run / "last.pt")["model"] for run in (whole, halves, plain)}
    assert _same(weights[whole], weights[halves])
    assert not _same(weights[whole], weights[plain])  # the loss reached the training
    assert "loss_consistency" in (whole / "metrics.jsonl").read_text()
