"""The sensor noise (`train --sensor-noise`, issue 20): each training image, prompt and
query apart, gets Gaussian noise stored as whole grey levels, so the model learns that two
shots of one scene differing by a grey level are no change; drawn from the run's seed and
step, so a resumed run trains on the same noise as an uninterrupted one."""

from __future__ import annotations

import torch
from test_train import NO_AUGMENT, _config, _same

from metauas.model.checkpoint import read_checkpoint
from metauas.trainer.augment import AugmentConfig
from metauas.trainer.device_augment import add_sensor_noise
from metauas.trainer.train import train


def _images() -> torch.Tensor:
    """Four images as the loader gives them: whole grey levels in [0, 1], with flat black
    and white areas (where clipping bites) and a mid-grey one."""
    x = torch.full((4, 3, 32, 32), 128 / 255)
    x[:, :, :8], x[:, :, -8:] = 0.0, 1.0
    return x


def test_noise_is_whole_grey_levels_within_its_std_and_fixed_by_its_seed():
    images = _images()
    noisy, other = add_sensor_noise([images, images], 4.0, key=[7, 0, 1])
    assert torch.equal(noisy, add_sensor_noise([images], 4.0, key=[7, 0, 1])[0])
    assert not torch.equal(noisy, other)  # prompt and query apart
    assert not torch.equal(noisy, add_sensor_noise([images], 4.0, key=[7, 0, 2])[0])  # the next step
    levels = noisy * 255
    assert torch.equal(levels, levels.round()) and noisy.min() >= 0 and noisy.max() <= 1
    grey = (noisy - images)[:, :, 8:-8] * 255  # the mid-grey band: no clipping
    stds = grey.flatten(1).std(dim=1)
    assert (stds <= 4.0 * 1.1 + 0.3).all() and stds.max() > 0.5  # each image its own std, up to 4 levels
    assert len({round(float(s), 1) for s in stds}) > 1


def test_a_run_with_sensor_noise_resumes_on_the_same_noise(shard_dir, tmp_path):
    whole, halves, clean = tmp_path / "whole", tmp_path / "halves", tmp_path / "clean"
    # a flat learning rate: a run cut at step 2 then has the schedule of the whole run
    options = dict(lr=3e-3, augment=NO_AUGMENT, min_lr_ratio=1.0)
    noisy = dict(options, augment=AugmentConfig(swap=0.0, affine=0.0, jitter=0.0, sensor_noise=6.0))
    train(_config(shard_dir, whole, steps=4, save_every=2, **noisy))
    train(_config(shard_dir, halves, steps=2, save_every=2, **noisy))
    train(_config(shard_dir, halves, steps=4, save_every=2, resume=True, **noisy))
    train(_config(shard_dir, clean, steps=4, save_every=2, **options))
    weights = {run: read_checkpoint(run / "last.pt")["model"] for run in (whole, halves, clean)}
    assert _same(weights[whole], weights[halves])
    assert not _same(weights[whole], weights[clean])  # the noise reached the training
