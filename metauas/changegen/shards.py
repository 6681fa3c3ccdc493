"""Writing shards of schema changepair/1, atomically and reproducibly, and index.json.

A shard is written to a hidden temporary name in the output folder and renamed when
complete, so a reader (or a rerun) never sees half a shard. Its summary (count,
change histogram, sha256, skips) goes to `.changegen/<shard>.json` first; index.json
is rebuilt from those summaries, which is what lets ranks, `--shards` runs and resumed
runs each contribute their part of one index. Tar members carry a fixed mtime, owner
and mode, so the same samples give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

from metauas.changegen.config import GENERATOR_NAME, GENERATOR_VERSION, GenerateConfig
from metauas.changegen.format import CHANGE_TYPES, SCHEMA, sample_key, shard_name
from metauas.changegen.images import encode
from metauas.changegen.pairs import Sample
from metauas.errors import UserError

MTIME = 946684800  # 2000-01-01T00:00:00Z, for every tar member
META_DIR = ".changegen"


def shard_indices(cfg: GenerateConfig, shard_id: int) -> list[int]:
    start = shard_id * cfg.shard_size
    return list(range(start, min(start + cfg.shard_size, cfg.num_pairs)))


def _plain(value):
    """numpy scalars/arrays -> JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, default=_plain).encode()


def sample_members(cfg: GenerateConfig, sample: Sample) -> list[tuple[str, bytes]]:
    """The four files of one sample, in the order they go into the tar."""
    key = sample_key(sample.index, cfg.num_pairs)
    fmt, q = cfg.image_format, cfg.jpeg_quality
    meta = {
        "schema": SCHEMA,
        "change": sample.pair.change,
        "source": sample.source,
        "seed": cfg.seed,
        "index": sample.index,
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "params": sample.pair.params,
    }
    return [
        (f"{key}.prompt.{fmt}", encode(sample.pair.prompt, fmt, q)),
        (f"{key}.query.{fmt}", encode(sample.pair.query, fmt, q)),
        (f"{key}.mask.png", encode(sample.pair.mask.astype(np.uint8) * 255, "png")),
        (f"{key}.json", to_json(meta)),
    ]


class ShardWriter:
    """Collects members into a temporary tar; `commit` renames it into place."""

    def __init__(self, out: Path, name: str):
        self.final = out / name
        self.tmp = out / f".{name}.tmp-{os.getpid()}"
        for stale in out.glob(f".{name}.tmp-*"):  # left by a killed run
            stale.unlink(missing_ok=True)
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), MTIME, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def commit(self, summary: dict) -> dict:
        """Close, hash, write the summary, then rename: the tar appears last."""
        self.tar.close()
        digest = hashlib.sha256(self.tmp.read_bytes()).hexdigest()
        summary = {**summary, "name": self.final.name, "sha256": digest}
        write_atomic(meta_dir(self.final.parent) / f"{self.final.stem}.json", to_json(summary))
        os.replace(self.tmp, self.final)
        return summary


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def meta_dir(out: Path) -> Path:
    return out / META_DIR


def shard_summary(made: list[tuple[str, Counter]]) -> dict:
    """Count, change histogram and skips by reason from (change, skips) per sample."""
    changes = Counter(change for change, _ in made)
    skips: Counter = Counter()
    for _, sample_skips in made:
        skips.update(sample_skips)
    return {"count": len(made), "changes": {c: changes[c] for c in CHANGE_TYPES}, "skips": dict(sorted(skips.items()))}


def prepare_output(cfg: GenerateConfig) -> None:
    """Create the output folder, prove it writable, and refuse to mix two configs
    in one folder (a rerun with the same config resumes)."""
    try:
        meta_dir(cfg.out).mkdir(parents=True, exist_ok=True)
        probe = meta_dir(cfg.out) / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--out {cfg.out} is not writable ({err.strerror or err})") from None
    config = to_json(cfg.dataset_fields())
    existing = meta_dir(cfg.out) / "config.json"
    if existing.is_file() and existing.read_bytes() != config:
        raise UserError(f"--out {cfg.out} holds a dataset made with another config; choose a new --out or the same options")
    if not existing.is_file():
        write_atomic(existing, config)


def is_complete(cfg: GenerateConfig, shard_id: int) -> bool:
    name = shard_name(cfg.prefix, shard_id)
    return (cfg.out / name).is_file() and (meta_dir(cfg.out) / f"{Path(name).stem}.json").is_file()


def write_index(cfg: GenerateConfig) -> Path:
    """index.json from the summaries of every complete shard, in shard order."""
    shards, changes, skips = [], Counter(), Counter()
    for shard_id in range(cfg.num_shards):
        if not is_complete(cfg, shard_id):
            continue
        summary = json.loads((meta_dir(cfg.out) / f"{Path(shard_name(cfg.prefix, shard_id)).stem}.json").read_bytes())
        shards.append({k: summary[k] for k in ("name", "count", "changes", "sha256")})
        changes.update(summary["changes"])
        skips.update(summary["skips"])
    index = {
        "schema": SCHEMA,
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "seed": cfg.seed,
        "config": cfg.dataset_fields(),
        "num_pairs": cfg.num_pairs,
        "num_shards": cfg.num_shards,
        "complete": len(shards) == cfg.num_shards,
        "pairs_written": sum(s["count"] for s in shards),
        "changes": {c: changes[c] for c in CHANGE_TYPES},
        "skips": dict(sorted(skips.items())),
        "shards": shards,
    }
    path = cfg.out / "index.json"
    write_atomic(path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
    return path
