"""The generation's side of writing shards: which samples a shard holds, their members,
the output folder's identity (config.json, source.json), and index.json's fields.

The writing itself (atomic shards, locks, summaries, index.json) is `metauas.data.shards`,
the same code any other generator writes with; this module only adds what a
`GenerateConfig` decides.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from metauas.changegen.config import GENERATOR_NAME, GENERATOR_VERSION, GenerateConfig
from metauas.changegen.pairs import Sample
from metauas.data.format import encode_pair, sample_key, to_json
from metauas.data.shards import ShardBusy, ShardLocks, meta_dir
from metauas.data.shards import write_index as write_shard_index
from metauas.errors import UserError
from metauas.outputs import write_atomic


def shard_indices(cfg: GenerateConfig, shard_id: int) -> list[int]:
    start = shard_id * cfg.shard_size
    return list(range(start, min(start + cfg.shard_size, cfg.num_pairs)))


def sample_members(cfg: GenerateConfig, sample: Sample) -> list[tuple[str, bytes]]:
    """The four files of one sample, in the order they go into the tar."""
    meta = {
        "change": sample.pair.change,
        "source": sample.source,
        "seed": cfg.seed,
        "index": sample.index,
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "params": sample.pair.params,
    }
    key = sample_key(sample.index, cfg.num_pairs)
    return encode_pair(
        key, sample.pair.prompt, sample.pair.query, sample.pair.mask, meta, cfg.image_format, cfg.jpeg_quality
    )


def config_record(cfg: GenerateConfig) -> tuple[Path, bytes]:
    """Where `cfg.out` keeps the record of the config its dataset is made with, and what
    this config's record holds (what a rerun is compared with)."""
    return meta_dir(cfg.out) / "config.json", to_json(cfg.dataset_fields())


def holds_another_config(cfg: GenerateConfig) -> bool:
    """Whether `cfg.out` already holds (part of) a dataset made with another config."""
    existing, config = config_record(cfg)
    return existing.is_file() and existing.read_bytes() != config


def prepare_output(cfg: GenerateConfig, left_out: Counter | None = None) -> None:
    """Create the output folder, prove it writable, and refuse to mix two configs
    in one folder (a rerun with the same config resumes). `left_out` (the files the
    source passed over while listing) goes to index.json as `source_skips`."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise UserError(f"`out` {cfg.out} is a file, not a folder: give a folder name (it is created if missing)")
    existing, config = config_record(cfg)
    if holds_another_config(cfg):
        raise UserError(
            f"`out` {cfg.out} holds a dataset made with another config; choose a new `out` or the same options"
        )
    source = meta_dir(cfg.out) / "source.json"
    listing = to_json(dict(sorted((left_out or {}).items())))
    try:
        meta_dir(cfg.out).mkdir(parents=True, exist_ok=True)
        if not existing.is_file():
            write_atomic(existing, config)
        if not source.is_file() or source.read_bytes() != listing:
            write_atomic(source, listing)
    except OSError as err:
        raise UserError(f"`out` {cfg.out} is not writable ({err.strerror or err})") from None


def lock_shards(cfg: GenerateConfig, shard_ids: list[int]) -> ShardLocks:
    """The locks of the shards this run makes; refused (and released) when another run is
    writing one of them."""
    locks = ShardLocks(cfg.out)
    try:
        locks.acquire(cfg.prefix, shard_ids)
    except ShardBusy as busy:
        raise UserError(
            f"`out` {cfg.out}: another generate run is writing {busy.name} right now; "
            "wait for it to end (rerunning then resumes what is missing) or choose another `out` "
            "(ranks and `shards` ranges that do not overlap may share one folder)"
        ) from None
    return locks


def _source_skips(cfg: GenerateConfig) -> dict:
    try:
        return json.loads((meta_dir(cfg.out) / "source.json").read_bytes())
    except (OSError, ValueError):  # a dataset made before source skips were recorded
        return {}


# skips of whole source images (the others are instances, crowds and redraws: normal noise)
IMAGE_SKIPS = ("unreadable", "too_small", "too_large", "size_mismatch")


def skip_report(index: dict) -> list[str]:
    """The lines `generate` prints at the end of a run: source images skipped while
    drawing pairs, and files the source left out while listing, each named in index.json."""

    def counts(found: dict) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(found.items()))

    lines = []
    images = {r: n for r, n in index.get("skips", {}).items() if r in IMAGE_SKIPS}
    if images:
        first = index.get("skip_examples", {}).get(next(iter(sorted(images))), "")
        lines.append(
            f"warning: source images skipped while drawing pairs (counted per draw): {counts(images)} "
            f"(index.json skips{'; first: ' + first if first else ''})"
        )
    if index.get("source_skips"):
        lines.append(
            f"warning: files left out of the source: {counts(index['source_skips'])} (index.json source_skips)"
        )
    return lines


def write_index(cfg: GenerateConfig) -> Path:
    """index.json from the summaries of every complete shard, with the run's config."""
    fields = {
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "seed": cfg.seed,
        "config": cfg.dataset_fields(),
        "num_pairs": cfg.num_pairs,
        "source_skips": _source_skips(cfg),
    }
    return write_shard_index(cfg.out, cfg.prefix, cfg.num_shards, fields)
