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
from metauas.data.format import CHANGE_TYPES, SCHEMA, sample_key, shard_name
from metauas.data.images import encode
from metauas.changegen.pairs import Sample
from metauas.errors import UserError
from metauas.outputs import write_atomic

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

    def abort(self) -> None:
        """Drop the temporary file (the run failed or was interrupted while writing it)."""
        try:
            self.tar.close()
        except OSError:  # e.g. a full disk again while flushing the end blocks
            pass
        self.tmp.unlink(missing_ok=True)

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


def meta_dir(out: Path) -> Path:
    return out / META_DIR


def shard_summary(made: list[tuple[str, Counter]]) -> dict:
    """Count, change histogram and skips by reason from (change, skips) per sample."""
    changes = Counter(change for change, _ in made)
    skips: Counter = Counter()
    first: dict[str, str] = {}
    for _, sample_skips in made:
        skips.update(sample_skips)
        for reason, detail in getattr(sample_skips, "first", {}).items():
            first.setdefault(reason, detail)
    return {"count": len(made), "changes": {c: changes[c] for c in CHANGE_TYPES}, "skips": dict(sorted(skips.items())),
            "skip_examples": dict(sorted(first.items()))}


def prepare_output(cfg: GenerateConfig, left_out: Counter | None = None) -> None:
    """Create the output folder, prove it writable, and refuse to mix two configs
    in one folder (a rerun with the same config resumes). `left_out` (the files the
    source passed over while listing) goes to index.json as `source_skips`."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise UserError(f"--out {cfg.out} is a file, not a folder: give a folder name (it is created if missing)")
    config = to_json(cfg.dataset_fields())
    existing = meta_dir(cfg.out) / "config.json"
    if existing.is_file() and existing.read_bytes() != config:
        raise UserError(f"--out {cfg.out} holds a dataset made with another config; choose a new --out or the same options")
    source = meta_dir(cfg.out) / "source.json"
    listing = to_json(dict(sorted((left_out or {}).items())))
    try:
        meta_dir(cfg.out).mkdir(parents=True, exist_ok=True)
        if not existing.is_file():
            write_atomic(existing, config)
        if not source.is_file() or source.read_bytes() != listing:
            write_atomic(source, listing)
    except OSError as err:
        raise UserError(f"--out {cfg.out} is not writable ({err.strerror or err})") from None


class ShardLocks:
    """Who is writing which shard: a POSIX byte-range lock (`fcntl.lockf`) on one byte
    per shard id of `.changegen/lock`, held by the parent process for the whole run.

    Two runs that would write the same shard cannot both go on (the second is refused
    with one line), while ranks and `--shards` ranges that do not overlap still share a
    folder. Record locks work on NFS and die with their process, so a killed run never
    leaves a stale lock behind. Only this object may open the lock file in a process:
    closing any descriptor of it would drop the process's locks.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        try:
            self.file = open(meta_dir(out) / "lock", "a+b")
        except OSError as err:
            raise UserError(f"--out {out} is not writable ({err.strerror or err})") from None

    def acquire(self, cfg: GenerateConfig, shard_ids: list[int]) -> None:
        import fcntl

        for shard_id in shard_ids:
            try:
                fcntl.lockf(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, shard_id, os.SEEK_SET)
            except OSError:
                self.close()
                raise UserError(
                    f"--out {self.out}: another generate run is writing {shard_name(cfg.prefix, shard_id)} right now; "
                    "wait for it to end (rerunning then resumes what is missing) or choose another --out "
                    "(ranks and --shards ranges that do not overlap may share one folder)") from None

    def close(self) -> None:
        self.file.close()


def remove_partial(cfg: GenerateConfig, shard_ids: list[int]) -> None:
    """Delete the temporary files of shards this run holds the locks of (a failed or
    interrupted run: pool workers it terminated cannot clean up after themselves)."""
    for shard_id in shard_ids:
        name = shard_name(cfg.prefix, shard_id)
        for tmp in [*cfg.out.glob(f".{name}.tmp-*"), *meta_dir(cfg.out).glob(f".{Path(name).stem}.json.tmp-*")]:
            tmp.unlink(missing_ok=True)


def is_complete(cfg: GenerateConfig, shard_id: int) -> bool:
    name = shard_name(cfg.prefix, shard_id)
    return (cfg.out / name).is_file() and (meta_dir(cfg.out) / f"{Path(name).stem}.json").is_file()


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
        lines.append(f"warning: source images skipped while drawing pairs (counted per draw): {counts(images)} "
                     f"(index.json skips{'; first: ' + first if first else ''})")
    if index.get("source_skips"):
        lines.append(f"warning: files left out of the source: {counts(index['source_skips'])} "
                     "(index.json source_skips)")
    return lines


def write_index(cfg: GenerateConfig) -> Path:
    """index.json from the summaries of every complete shard, in shard order."""
    shards, changes, skips, examples = [], Counter(), Counter(), {}
    for shard_id in range(cfg.num_shards):
        if not is_complete(cfg, shard_id):
            continue
        summary = json.loads((meta_dir(cfg.out) / f"{Path(shard_name(cfg.prefix, shard_id)).stem}.json").read_bytes())
        shards.append({k: summary[k] for k in ("name", "count", "changes", "sha256")})
        changes.update(summary["changes"])
        skips.update(summary["skips"])
        for reason, detail in summary.get("skip_examples", {}).items():
            examples.setdefault(reason, detail)
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
        "skip_examples": dict(sorted(examples.items())),
        "source_skips": _source_skips(cfg),
        "shards": shards,
    }
    path = cfg.out / "index.json"
    write_atomic(path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
    return path
