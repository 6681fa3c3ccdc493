"""Change pairs streamed from `changepair/1` shards into torch (the training side).

Both readers decode with `data.format.decode_pair`, the schema's one decoder:
- `train_loader`: an endless, shuffled, augmented stream split across nodes (ranks) and
  DataLoader workers by webdataset, batched inside the workers as uint8 tensors (4x less
  to pass between processes than float), images N x H x W x 3 as decoded (stacking them
  is one memcpy; on CUDA the NCHW view of that is already channels_last), masks N x H x W.
  The workers either augment each pair (`augment_on="workers"`, OpenCV) or only draw its
  augmentation choices, which `to_device` applies to the whole batch on the training
  device (`"device"`, see device_augment.py: on GPU nodes the CPU cores then only decode);
- `resized_pairs`: a deterministic, un-augmented pass over held-out shards (format's
  torch-free reader) as float tensors, for validation and the demo.
A corrupt sample or shard is logged and skipped, so one bad tar never kills a long run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from metauas.data.format import ReadStats, decode_pair, iter_pairs, shard_samples
from metauas.trainer.augment import AugmentConfig, augment_pair, draw_params, resample_sources, resize_pair

log = logging.getLogger("metauas.data")
PREFETCH = 4  # batches each loader worker keeps ready


def log_and_continue(exn: Exception) -> bool:
    """webdataset handler: report a bad sample or shard and go on with the next one."""
    log.warning("skipping corrupt data: %s: %s", type(exn).__name__, str(exn.args[:1])[:300])
    return True


def _to_tensors(pair: dict) -> dict:
    """HWC uint8 arrays -> CHW uint8 tensors (float conversion happens on the device)."""
    return {
        "prompt": torch.from_numpy(np.ascontiguousarray(pair["prompt"].transpose(2, 0, 1))),
        "query": torch.from_numpy(np.ascontiguousarray(pair["query"].transpose(2, 0, 1))),
        "mask": torch.from_numpy(pair["mask"])[None],
    }


@dataclass(frozen=True)
class StreamConfig:
    """How the training stream reads, shuffles, splits and augments shards."""

    urls: tuple[str, ...]
    size: int = 256
    batch_size: int = 8
    workers: int = 2
    shuffle_buffer: int = 1000
    resampled: bool = False  # draw shards with replacement (multi-node; no epochs)
    seed: int = 0  # shard order, shuffling and augmentation (the same on every rank, mixed with rank/worker)
    start_step: int = 0  # a resumed run: steps already done, whose samples each reader skips
    augment: AugmentConfig = AugmentConfig()
    augment_on: str = "workers"  # workers (OpenCV, per pair) | device (batched, in `to_device`)


def _reader() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def consumed(start_step: int, batch_size: int) -> int:
    """Samples this reader fed into the first `start_step` batches: the DataLoader takes
    batch b from worker b % workers, so worker w made len(range(w, start_step, workers))."""
    worker, workers = _reader()
    return len(range(worker, start_step, workers)) * batch_size


class _SkipConsumed:
    """Resume: drop, before decoding, the samples the steps already done were made of,
    so a resumed run goes on with the data the uninterrupted run would have seen next
    (exact when none of those samples was corrupt)."""

    def __init__(self, start_step: int, batch_size: int) -> None:
        self.start_step, self.batch_size = start_step, batch_size

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        return itertools.islice(samples, consumed(self.start_step, self.batch_size), None)


class _Augmenter:
    """Picklable per-sample map for the workers. Sample n of a reader draws from an RNG
    seeded by (seed, rank, worker, n): ranks and workers differ, and a resumed run (whose
    readers start at n = the samples already consumed) repeats the uninterrupted run's
    augmentations exactly.
    """

    def __init__(
        self,
        size: int,
        augment: AugmentConfig,
        seed: list[int],
        start_step: int = 0,
        batch_size: int = 1,
        on_device: bool = False,
    ) -> None:
        self.size = size
        self.augment = augment
        self.seed = seed
        self.start_step, self.batch_size = start_step, batch_size
        self.on_device = on_device
        self.count: int | None = None

    def __call__(self, sample: dict) -> dict:
        if self.count is None:
            self.count = consumed(self.start_step, self.batch_size)
        rng = np.random.default_rng([*self.seed, _reader()[0], self.count])
        self.count += 1
        pair = decode_pair(sample, meta=False)
        if not self.on_device:
            return augment_pair(pair, self.size, self.augment, rng)
        # batches need one size; the draws then include no resize (the warp starts at `size`)
        pair = resize_pair(pair, self.size)
        params = draw_params(rng, self.augment, (self.size, self.size), self.size)
        return {**resample_sources(pair, params), "params": params}


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a loader worker it is made in shared memory, so
    handing the batch to the training process copies nothing more (torch would otherwise
    copy every tensor into shared memory as the worker sends it)."""
    if torch.utils.data.get_worker_info() is not None:
        try:
            storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
        except (AttributeError, RuntimeError):  # a torch without it: the copy happens on sending
            return torch.empty(shape, dtype=torch.uint8)
        strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape, strides)
    return torch.empty(shape, dtype=torch.uint8)


def collate_pairs(samples: list[dict]) -> dict:
    """uint8 batch tensors: images N x H x W x 3, masks N x H x W (one copy each), plus the
    packed augmentation choices when the workers only drew them."""
    batch = {}
    for key in ("prompt", "query", "mask"):
        batch[key] = _batch_tensor((len(samples), *samples[0][key].shape))
        np.stack([s[key] for s in samples], out=batch[key].numpy())
    if "params" in samples[0]:
        from metauas.trainer.device_augment import pack_params

        batch.update(pack_params([s["params"] for s in samples], batch["mask"].shape[-1]))
    return batch


def to_device(batch: dict, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A loader batch as prompt, query (N x 3 x H x W floats in [0, 1]) and masks
    (N x 1 x H x W, 0/1) on `device`, augmented there first if the workers only drew the
    choices. Copies uint8 and converts after (4x less to move)."""
    if "aug_swap" in batch:
        from metauas.trainer.device_augment import augment_batch

        return augment_batch(batch, device)
    prompt, query = (
        batch[k].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255) for k in ("prompt", "query")
    )
    if torch.device(device).type != "cuda":  # the CPU convolutions want NCHW; CUDA takes channels_last
        prompt, query = prompt.contiguous(), query.contiguous()
    return prompt, query, batch["mask"].to(device, non_blocking=True)[:, None].float()


def tar_samples(src):
    """webdataset stage: shard URLs -> raw samples, read by data.format's direct tar
    parser (a quarter of webdataset's tarfile-based reader's time per pair); an unreadable
    shard is logged and skipped, the rest of the stream goes on."""
    stats = ReadStats()
    for item in src:
        yield from shard_samples(item["url"], stats)


def _worker_seed() -> int:
    """ResampledShards' per-reader seed: the worker id (webdataset's default mixes in the
    DataLoader's random base seed, which a resumed run would draw anew)."""
    return _reader()[0]


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train_dataset(cfg: StreamConfig):
    """The endless augmented stream of uint8 batches {prompt, query, mask}."""
    import webdataset as wds

    urls = list(cfg.urls)
    rank, world = _rank_world()
    readers = world * max(cfg.workers, 1)
    resampled = cfg.resampled or len(urls) < readers
    if resampled:  # every reader draws shards at random: no node/worker split needed
        shards = wds.ResampledShards(urls, seed=cfg.seed + rank, deterministic=True, worker_seed=_worker_seed)
        samples = wds.DataPipeline(shards, tar_samples)
    else:  # each node, then each worker, takes every n-th shard; reshuffled per epoch.
        # Epochs repeat the samples, not the batches: a reader whose share is smaller than
        # a batch still fills batches across epochs instead of ending the stream.
        samples = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.detshuffle(len(urls), seed=cfg.seed),
            wds.split_by_node,
            wds.split_by_worker,
            tar_samples,
        ).repeat(nepochs=10**9)
    return wds.DataPipeline(
        samples,
        wds.shuffle(cfg.shuffle_buffer, initial=min(cfg.shuffle_buffer, 100), seed=cfg.seed + rank),
        _SkipConsumed(cfg.start_step, cfg.batch_size),
        wds.map(
            _Augmenter(
                cfg.size, cfg.augment, [cfg.seed, rank], cfg.start_step, cfg.batch_size, cfg.augment_on == "device"
            ),
            handler=log_and_continue,
        ),
        wds.batched(cfg.batch_size, collation_fn=collate_pairs, partial=False),
    )


def train_loader(cfg: StreamConfig) -> torch.utils.data.DataLoader:
    """DataLoader over `train_dataset` (batches are formed in the workers).

    OpenCV is set to one thread in this process before the workers fork: the workers are
    the parallelism (its pool would only oversubscribe the cores), and a forked child that
    touches a pool its parent had started can hang in it (calling setNumThreads in the
    child did, in the test suite); with one thread the children never use the pool."""
    if cfg.workers > 0:
        import cv2

        cv2.setNumThreads(1)
    return torch.utils.data.DataLoader(
        train_dataset(cfg),
        batch_size=None,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        prefetch_factor=PREFETCH if cfg.workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )


def to_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 batch -> float in [0, 1] on `device` (converted after the copy: 4x less to move)."""
    return images.to(device, non_blocking=True).float().div_(255)


def resized_pairs(urls: str | list[str], size: int, stats: ReadStats | None = None) -> Iterator[dict]:
    """Every pair of `urls` in order, resized to size x size, no augmentation.

    Yields {"key", "prompt": 3xSxS float [0,1], "query": same, "mask": 1xSxS float {0,1},
    "meta": the sample's JSON}. Corrupt samples and shards are skipped and counted in `stats`.
    """
    for pair in iter_pairs(urls, stats):
        tensors = _to_tensors(resize_pair(pair, size))
        yield {
            "key": pair["key"],
            "prompt": tensors["prompt"].float() / 255,
            "query": tensors["query"].float() / 255,
            "mask": tensors["mask"].float(),
            "meta": pair["meta"],
        }
