"""Streaming shards: URL forms, the deterministic reader, augmentation, corrupt data."""

import logging
import os
import shutil

import numpy as np
import pytest
import torch
from make_data import write_shards

from metauas.data.format import ReadStats, count_samples, expand_urls, iter_samples
from metauas.errors import UserError
from metauas.trainer.augment import AugmentConfig, augment_pair
from metauas.trainer.stream import StreamConfig, resized_pairs, train_dataset


def test_url_forms_expand_to_the_same_shards(shard_dir):
    train = shard_dir / "train"
    expected = [str(p) for p in sorted(train.glob("*.tar"))]
    assert expand_urls(str(train / "shard-{000000..000003}.tar")) == expected
    assert expand_urls(str(train / "*.tar")) == expected
    assert expand_urls(str(train)) == expected
    assert expand_urls(["pipe:cat a.tar", "s3://bucket/x-{0..1}.tar", "https://h/y.tar"]) == [
        "pipe:cat a.tar",
        "pipe:aws s3 cp s3://bucket/x-0.tar -",
        "pipe:aws s3 cp s3://bucket/x-1.tar -",
        "https://h/y.tar",
    ]
    assert count_samples(expected) == 32
    with pytest.raises(UserError, match="not found"):
        expand_urls(str(train / "missing.tar"))
    with pytest.raises(UserError, match="no shards"):
        expand_urls(str(train / "*.nothing"))


def test_iter_pairs_is_deterministic_and_reads_pipe_urls(shard_dir):
    path = shard_dir / "val" / "shard-000000.tar"
    first = list(resized_pairs(str(path), 32))
    again = list(resized_pairs(f"pipe:cat {path}", 32))
    assert [p["key"] for p in first] == [f"{i:08d}" for i in range(8)]
    assert [p["key"] for p in again] == [p["key"] for p in first]
    for a, b in zip(first, again):
        assert torch.equal(a["query"], b["query"]) and torch.equal(a["mask"], b["mask"])
    pair = first[0]
    assert pair["prompt"].shape == (3, 32, 32) and pair["prompt"].dtype == torch.float32
    assert 0 <= pair["prompt"].min() and pair["prompt"].max() <= 1
    assert set(pair["mask"].unique().tolist()) <= {0.0, 1.0}
    assert pair["meta"]["schema"] == "changepair/1"


def test_a_pipe_that_writes_past_the_end_of_the_archive_loses_nothing(shard_dir):
    """A command still writing after the tar's end-of-archive blocks (its record padding;
    here 1 MiB of it, more than a pipe holds) ends normally: every sample, no skipped
    shard. Closing the pipe on it killed it with SIGPIPE (exit 141), at random with the
    few KiB of a real archive's padding (seen with `aws s3 cp`)."""
    path = shard_dir / "val" / "shard-000000.tar"
    stats = ReadStats()
    padded = list(iter_samples(f"pipe:cat {path}; head -c 1048576 /dev/zero", stats))
    assert [s["__key__"] for s in padded] == [f"{i:08d}" for i in range(8)]
    assert stats.skipped == {}


def test_corrupt_samples_and_truncated_shards_are_logged_and_skipped(tmp_path, caplog):
    good = write_shards(tmp_path / "good", shards=1, per_shard=6)[0]
    truncated = tmp_path / "bad" / "shard-000001.tar"
    truncated.parent.mkdir()
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # cut mid-member: tarfile raises
    garbage = tmp_path / "bad" / "shard-000002.tar"
    garbage.write_bytes(b"\x00garbage" * 300)
    corrupt_sample = tmp_path / "bad" / "shard-000003.tar"
    shutil.copy(good, corrupt_sample)
    raw = bytearray(corrupt_sample.read_bytes())
    at = raw.find(b"\x89PNG", 2000)  # damage one image inside a valid tar
    raw[at : at + 64] = b"\x00" * 64
    corrupt_sample.write_bytes(bytes(raw))

    urls = [str(good), str(truncated), str(garbage), str(corrupt_sample)]
    stats = ReadStats()
    with caplog.at_level(logging.WARNING, logger="metauas.format"):
        keys = [p["key"] for p in resized_pairs(urls, 32, stats)]
    assert keys[:6] == [f"{i:08d}" for i in range(6)]
    assert 6 < len(keys) < 6 + 3 + 6  # part of the truncated shard, 5 of the damaged one
    assert stats.skipped == {"unreadable_shard": 2, "corrupt_sample": 1} and stats.samples == len(keys)
    assert sum("skipping" in r.message for r in caplog.records) == 3
    assert "2 unreadable_shard" in stats.summary()

    for place in ("workers", "device"):
        stream = StreamConfig(tuple(urls), size=32, batch_size=4, workers=0, shuffle_buffer=8, augment_on=place)
        batches = [b for _, b in zip(range(6), iter(train_dataset(stream)))]
        assert all(b["prompt"].shape == (4, 32, 32, 3) and b["mask"].shape == (4, 32, 32) for b in batches)
        assert all(("aug_swap" in b) == (place == "device") for b in batches)


def test_augmentation_swaps_warps_and_keeps_only_change_visible_in_both():
    rng = np.random.default_rng(0)
    size = 48
    prompt = np.full((64, 64, 3), 100, np.uint8)
    query = prompt.copy()
    query[:, 32:] = 200  # the right half changed
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    pair = {"prompt": prompt, "query": query, "mask": mask}
    cfg = AugmentConfig(swap=0.0, affine=1.0, jitter=0.0)
    for _ in range(20):
        out = augment_pair(pair, size, cfg, rng)
        assert out["prompt"].shape == (size, size, 3) and out["mask"].shape == (size, size)
        changed = out["mask"] > 0
        # masked pixels show the query's changed content (bar bilinear edges)
        assert np.mean(out["query"][changed] > 150) > 0.9
    # no warp and no swap: the mask is the resized original
    plain = augment_pair(pair, 32, AugmentConfig(swap=0.0, affine=0.0, jitter=0.0), rng)
    assert plain["mask"][:, 16:].all() and not plain["mask"][:, :16].any()
    swapped = augment_pair(pair, 32, AugmentConfig(swap=1.0, affine=0.0, jitter=0.0), rng)
    assert np.all(swapped["prompt"][:, 20:] > 150) and swapped["mask"][:, 16:].all()


def test_warp_drops_change_that_the_prompt_does_not_show():
    """Shift the prompt far right: the query's left change has no counterpart, so it goes."""
    rng = np.random.default_rng(3)
    prompt = np.full((64, 64, 3), 100, np.uint8)
    mask = np.ones((64, 64), np.uint8)
    cfg = AugmentConfig(swap=0.0, affine=1.0, jitter=0.0, degrees=0.0, translate=0.45, scale=(1.0, 1.0))
    kept = [
        augment_pair({"prompt": prompt, "query": prompt, "mask": mask}, 64, cfg, rng)["mask"].mean() for _ in range(20)
    ]
    assert min(kept) < 0.8  # a large prompt shift removes change it cannot see


def test_stream_fills_batches_larger_than_a_readers_share_of_the_data(tmp_path):
    from metauas.trainer.stream import train_loader

    write_shards(tmp_path, shards=2, per_shard=3, size=32)  # 2 workers x 3 pairs, batch 8
    cfg = StreamConfig(
        (str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")),
        size=32,
        batch_size=8,
        workers=2,
        shuffle_buffer=4,
    )
    batches = iter(train_loader(cfg))
    for _ in range(3):
        batch = next(batches)
        assert batch["prompt"].shape == (8, 32, 32, 3) and batch["mask"].shape[0] == 8


def test_both_augmentation_places_give_the_model_the_same_batch_shapes(shard_dir):
    """to_device turns a workers-augmented batch and a device-augmented one (64 px shards
    trained at 48) into the same float NCHW tensors and 0/1 masks."""
    from metauas.trainer.stream import to_device

    urls = tuple(str(p) for p in sorted((shard_dir / "train").glob("*.tar")))
    for place in ("workers", "device"):
        stream = StreamConfig(urls, size=48, batch_size=4, workers=0, shuffle_buffer=4, augment_on=place)
        prompt, query, mask = to_device(next(iter(train_dataset(stream))), "cpu")
        assert prompt.shape == query.shape == (4, 3, 48, 48) and mask.shape == (4, 1, 48, 48)
        assert prompt.is_contiguous() and prompt.dtype == torch.float32 and 0 <= prompt.min() <= prompt.max() <= 1
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_s3_urls_stream_through_the_aws_cli(shard_dir, tmp_path, monkeypatch):
    """A stand-in `aws` on PATH serves s3://bucket/KEY from a local folder, as `aws s3 cp
    URL -` streams an object to stdout: the reader and the training stream both read it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(f'#!/bin/sh\n[ "$1 $2 $4" = "s3 cp -" ] || exit 9\nexec cat {shard_dir}/${{3#s3://bucket/}}\n')
    aws.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    urls = expand_urls("s3://bucket/train/shard-{000000..000001}.tar")
    assert [p["key"] for p in resized_pairs(urls, 32)] == [
        p["key"] for p in resized_pairs([str(shard_dir / "train" / f"shard-00000{i}.tar") for i in (0, 1)], 32)
    ]
    stream = StreamConfig(tuple(urls), size=32, batch_size=4, workers=0, shuffle_buffer=4)
    batch = next(iter(train_dataset(stream)))
    assert batch["prompt"].shape == (4, 32, 32, 3)


def test_the_resolution_jitter_reaches_both_augmentation_places(shard_dir):
    """--resample-jitter alone (no swap, warp or colour jitter), trained at the shards' own
    64 px: both places feed the model the same resampled images (up to the device path's
    rounding), which differ from the stored ones."""
    from metauas.trainer.stream import to_device

    urls = tuple(str(p) for p in sorted((shard_dir / "train").glob("*.tar")))
    only = AugmentConfig(swap=0.0, affine=0.0, jitter=0.0, resample_jitter=1.0)
    batches = {}
    for place, augment in (("workers", only), ("device", only), ("stored", AugmentConfig(0.0, 0.0, jitter=0.0))):
        stream = StreamConfig(
            urls, size=64, batch_size=4, workers=0, shuffle_buffer=1, augment=augment,
            augment_on="workers" if place == "stored" else place,
        )  # fmt: skip
        batches[place] = to_device(next(iter(train_dataset(stream))), "cpu")
    for i in range(3):  # prompt, query, mask
        assert (batches["workers"][i] - batches["device"][i]).abs().max() <= 2 / 255
    assert (batches["workers"][1] - batches["stored"][1]).abs().mean() > 1 / 255
    assert torch.equal(batches["workers"][2], batches["stored"][2])
