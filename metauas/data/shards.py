"""Writing `changepair/1` datasets: atomic, reproducible shards and index.json.

The writing half of the format, beside its reading half (`format.py`), for any
generator: `ShardWriter` takes (prompt, query, mask, meta) and knows nothing of how the
pairs were made. `metauas generate` (changegen) writes with the same parts, because it
also resumes, splits shard ids over ranks and makes shards in worker processes:

- `ShardFile`: one shard written to a hidden temporary name in the output folder and
  renamed when complete, so a reader (or a rerun) never sees half a shard. Its summary
  (count, change histogram, sha256, skips) goes to `.changegen/<shard>.json` first;
- `write_index`: index.json rebuilt from those summaries, which is what lets ranks,
  `--shards` runs and resumed runs each contribute their part of one index;
- `ShardLocks`: a lock per shard id, so two writers never write the same shard.

Tar members carry a fixed mtime, owner and mode, so the same samples give the same bytes.
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

from metauas.data.format import CHANGE_TYPES, SCHEMA, encode_pair, sample_key, shard_name, to_json
from metauas.errors import UserError
from metauas.outputs import prepare_dir, write_atomic

MTIME = 946684800  # 2000-01-01T00:00:00Z, for every tar member
META_DIR = ".changegen"


def meta_dir(out: Path) -> Path:
    """The folder of per-shard summaries and the lock file, beside the shards."""
    return out / META_DIR


class ShardFile:
    """Collects members into a temporary tar; `commit` renames it into place."""

    def __init__(self, out: Path, name: str):
        self.final = out / name
        self.tmp = out / f".{name}.tmp-{os.getpid()}"
        remove_temps(out, name)  # a killed run's, of this shard: its tar and its summary
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


def shard_summary(made: list[tuple[str, Counter]]) -> dict:
    """Count, change histogram and skips by reason from (change, skips) per sample."""
    changes = Counter(change for change, _ in made)
    skips: Counter = Counter()
    first: dict[str, str] = {}
    for _, sample_skips in made:
        skips.update(sample_skips)
        for reason, detail in getattr(sample_skips, "first", {}).items():
            first.setdefault(reason, detail)
    return {
        "count": len(made),
        "changes": {c: changes[c] for c in CHANGE_TYPES},
        "skips": dict(sorted(skips.items())),
        "skip_examples": dict(sorted(first.items())),
    }


class ShardBusy(UserError):
    """Another process holds the lock of a shard this one would write (`name`)."""

    def __init__(self, out: Path, name: str) -> None:
        super().__init__(f"{out}: another process is writing {name} right now; write to another folder")
        self.name = name


class ShardLocks:
    """Who is writing which shard: a POSIX byte-range lock (`fcntl.lockf`) on one byte
    per shard id of `.changegen/lock`, held by the writing process for its whole run.

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
            raise UserError(f"`out` {out} is not writable ({err.strerror or err})") from None

    def acquire(self, prefix: str, shard_ids: list[int]) -> None:
        """Lock each shard id, or close (dropping every lock) and raise ShardBusy."""
        import fcntl

        for shard_id in shard_ids:
            try:
                fcntl.lockf(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, shard_id, os.SEEK_SET)
            except OSError:
                self.close()
                raise ShardBusy(self.out, shard_name(prefix, shard_id)) from None

    def close(self) -> None:
        self.file.close()


def summary_path(out: Path, prefix: str, shard_id: int) -> Path:
    return meta_dir(out) / f"{Path(shard_name(prefix, shard_id)).stem}.json"


def is_complete(out: Path, prefix: str, shard_id: int) -> bool:
    """Whether the shard and its summary are both in place (a resumed run skips it)."""
    return (out / shard_name(prefix, shard_id)).is_file() and summary_path(out, prefix, shard_id).is_file()


def remove_temps(out: Path, name: str) -> None:
    """Delete the temporary files of shard `name`: its tar and its summary, whichever
    process wrote them. Only the holder of the shard's lock calls this."""
    for tmp in [*out.glob(f".{name}.tmp-*"), *meta_dir(out).glob(f".{Path(name).stem}.json.tmp-*")]:
        tmp.unlink(missing_ok=True)


def remove_partial(out: Path, prefix: str, shard_ids: list[int]) -> None:
    """Delete the temporary files of shards this run holds the locks of (a failed or
    interrupted run: pool workers it terminated cannot clean up after themselves)."""
    for shard_id in shard_ids:
        remove_temps(out, shard_name(prefix, shard_id))


def write_index(out: Path, prefix: str, num_shards: int, fields: dict) -> Path:
    """index.json from the summaries of every complete shard, in shard order, with the
    writer's own `fields` (generator, seed, config, num_pairs, source_skips)."""
    shards: list[dict] = []
    changes: Counter[str] = Counter()
    skips: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for shard_id in range(num_shards):
        if not is_complete(out, prefix, shard_id):
            continue
        summary = json.loads(summary_path(out, prefix, shard_id).read_bytes())
        shards.append({k: summary[k] for k in ("name", "count", "changes", "sha256")})
        changes.update(summary["changes"])
        skips.update(summary["skips"])
        for reason, detail in summary.get("skip_examples", {}).items():
            examples.setdefault(reason, detail)
    index = {
        "schema": SCHEMA,
        **fields,
        "num_shards": num_shards,
        "complete": len(shards) == num_shards,
        "pairs_written": sum(s["count"] for s in shards),
        "changes": {c: changes[c] for c in CHANGE_TYPES},
        "skips": dict(sorted(skips.items())),
        "skip_examples": dict(sorted(examples.items())),
        "shards": shards,
    }
    path = out / "index.json"
    write_atomic(path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
    return path


class ShardWriter:
    """A `changepair/1` dataset from any generator (docs/shards.md).

    Feed it pairs with `write(prompt, query, mask, meta)`: RGB uint8 H x W x 3 images of
    one size, a mask (H x W, nonzero = changed) and the sample's JSON, at least
    `{"change": one of CHANGE_TYPES}` ("source" and "params" as you like). It numbers
    the samples, cuts them into `<prefix>-NNNNNN.tar` shards of `shard_size`, writes each
    atomically under a lock and, on `close` (the end of a `with` block), index.json.
    The same pairs give byte-identical shards. An error inside the `with` block leaves
    the complete shards and no partial one. The folder must hold no shards of `prefix`.
    """

    def __init__(
        self,
        out: str | Path,
        generator: str,
        version: str = "0",
        *,
        shard_size: int = 1000,
        prefix: str = "shard",
        image_format: str = "jpg",
        quality: int = 95,
        seed: int = 0,
        config: dict | None = None,
    ) -> None:
        self.out = prepare_dir(out, "ShardWriter: out")
        if shard_size < 1 or not prefix or "." in prefix or "/" in prefix:
            raise ValueError("ShardWriter wants shard_size >= 1 and a prefix without dots or slashes")
        if any(self.out.glob(f"{prefix}-*.tar")):
            raise UserError(f"{self.out} already holds shards named {prefix}-*.tar: write to another folder")
        self.generator, self.seed, self.config = {"name": generator, "version": version}, seed, config or {}
        self.shard_size, self.prefix, self.image_format, self.quality = shard_size, prefix, image_format, quality
        meta_dir(self.out).mkdir(exist_ok=True)
        self.locks = ShardLocks(self.out)
        self.count = 0
        self.shard: ShardFile | None = None
        self.made: list[tuple[str, Counter]] = []

    def write(self, prompt: np.ndarray, query: np.ndarray, mask: np.ndarray, meta: dict) -> str:
        """Add one pair (encoded at once; see the class docstring); returns its key."""
        record = {
            "source": {},
            "params": {},
            **meta,
            "seed": self.seed,
            "index": self.count,
            "generator": self.generator,
        }
        key = sample_key(self.count, self.count + 1)
        members = encode_pair(key, prompt, query, mask, record, self.image_format, self.quality)
        if self.shard is None:
            shard_id = self.count // self.shard_size
            self.locks.acquire(self.prefix, [shard_id])
            self.shard = ShardFile(self.out, shard_name(self.prefix, shard_id))
        for name, data in members:
            self.shard.add(name, data)
        self.made.append((record["change"], Counter()))
        self.count += 1
        if len(self.made) == self.shard_size:
            self._commit()
        return key

    def _commit(self) -> None:
        if self.shard is not None:
            self.shard.commit(shard_summary(self.made))
        self.shard, self.made = None, []

    def close(self) -> Path:
        """Write the last shard and index.json; returns index.json's path."""
        try:
            if self.shard is not None:
                self._commit()
            fields = {
                "generator": self.generator,
                "seed": self.seed,
                "config": self.config,
                "num_pairs": self.count,
                "source_skips": {},
            }
            return write_index(self.out, self.prefix, -(-self.count // self.shard_size), fields)
        finally:
            self.locks.close()

    def abort(self) -> None:
        """Drop the shard being written; complete shards stay (index.json is not written)."""
        if self.shard is not None:
            self.shard.abort()
            self.shard = None
        self.locks.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
