"""Running a generation: choose this process's shards, make the missing ones in 1..N
worker processes with a progress bar, and write index.json.

Which shards: `--shards A:B` (default all), then, under torchrun (RANK/WORLD_SIZE in
the environment), every WORLD_SIZE-th one starting at RANK. Shards already complete
are skipped, which is how a killed run resumes. Workers only decide which process
makes a shard, never its bytes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import sys
from collections.abc import Mapping
from pathlib import Path

from metauas.changegen.builtin import open_source
from metauas.changegen.config import GenerateConfig, parse_shard_range
from metauas.changegen.inpaint import make_inpainter, resolve_lama_path
from metauas.changegen.pairs import Synthesizer
from metauas.changegen.shards import lock_shards, prepare_output, sample_members, shard_indices, write_index
from metauas.data.format import shard_name
from metauas.data.shards import ShardFile, is_complete, remove_partial, shard_summary
from metauas.errors import UserError
from metauas.outputs import out_of_space


def rank_shards(cfg: GenerateConfig, env: dict[str, str] | None = None) -> list[int]:
    """Shard ids for this process: the --shards range, split round-robin by rank."""
    environ: Mapping[str, str] = os.environ if env is None else env
    ids = parse_shard_range(cfg.shards, cfg.num_shards)
    try:
        rank, world = int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers") from None
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not within WORLD_SIZE={world}")
    return [s for s in ids if (s - ids.start) % world == rank]


def make_shard(cfg: GenerateConfig, synth: Synthesizer, shard_id: int, report=lambda n: None) -> dict:
    """Synthesise, encode and atomically write one shard; returns its summary."""
    writer = ShardFile(cfg.out, shard_name(cfg.prefix, shard_id))
    made = []  # (change, skips) per sample; the pixels are dropped once written
    indices = shard_indices(cfg, shard_id)
    chunk = synth.inpainter.chunk  # samples advanced together: one inpainting batch
    try:
        for start in range(0, len(indices), chunk):
            samples = synth.make(indices[start : start + chunk])
            for sample in samples:
                for name, data in sample_members(cfg, sample):
                    writer.add(name, data)
                made.append((sample.pair.change, sample.skips))
            report(len(samples))
        return writer.commit(shard_summary(made))
    except BaseException:  # a full disk, an interrupt, a bug: no partial file stays behind
        writer.abort()
        raise


def build_synthesizer(cfg: GenerateConfig) -> Synthesizer:
    """Source + inpainter + synthesizer for a config (raises UserError for bad input)."""
    return Synthesizer(cfg, open_source(cfg), make_inpainter(cfg.inpainter, cfg.lama_model))


# --- worker processes -------------------------------------------------------------
_WORKER: dict = {}
# The parent's synthesizer. A forked worker inherits it (sharing e.g. a parsed COCO
# file copy-on-write); a spawned one starts with None here and builds its own.
_PARENT: dict = {}


def _worker_init(cfg: GenerateConfig, progress: mp.Queue) -> None:
    import cv2

    cv2.setNumThreads(1)  # processes are the parallelism; avoid oversubscription
    synth = _PARENT.get("synth") or build_synthesizer(cfg)
    _WORKER.update(cfg=cfg, synth=synth, progress=progress)


def _worker_shard(shard_id: int) -> dict:
    return make_shard(_WORKER["cfg"], _WORKER["synth"], shard_id, _WORKER["progress"].put)


def _run_pool(cfg: GenerateConfig, synth: Synthesizer, todo: list[int], bar) -> None:
    # spawn by default: a forked child of a process that already ran OpenCV's thread
    # pool can deadlock in it (seen here when a demo generates twice in one process).
    ctx = mp.get_context(cfg.start_method or "spawn")
    progress = ctx.Queue()
    if cfg.inpainter != "lama":  # a CUDA model does not survive a fork
        _PARENT["synth"] = synth
    with ctx.Pool(min(cfg.workers, len(todo)), _worker_init, (cfg, progress)) as pool:
        pending = [pool.apply_async(_worker_shard, (s,)) for s in todo]
        while pending:
            try:
                bar.update(progress.get(timeout=0.2))
            except queue.Empty:
                pass
            for result in [r for r in pending if r.ready()]:
                result.get()  # re-raises a worker's exception here
                pending.remove(result)
        while not progress.empty():
            bar.update(progress.get())


def _make(cfg: GenerateConfig, synth: Synthesizer, todo: list[int], mine: list[int]) -> None:
    from tqdm import tqdm

    total = sum(len(shard_indices(cfg, s)) for s in todo)
    with tqdm(
        total=total,
        unit="pair",
        file=sys.stderr,
        disable=not cfg.progress,
        dynamic_ncols=True,
        desc=f"generate {len(todo)}/{len(mine)} shards",
    ) as bar:
        if cfg.workers == 1 or len(todo) <= 1:
            for s in todo:
                make_shard(cfg, synth, s, bar.update)
        else:
            try:
                _run_pool(cfg, synth, todo, bar)
            finally:
                _PARENT.clear()


def _out_of_space(cfg: GenerateConfig) -> UserError:
    """The message for a full disk: what is safe, and that rerunning resumes."""
    done = [s for s in range(cfg.num_shards) if is_complete(cfg.out, cfg.prefix, s)]
    try:
        write_index(cfg)
    except OSError:
        pass  # no room even for index.json: the shards and their summaries are what counts
    pairs = sum(len(shard_indices(cfg, s)) for s in done)
    return UserError(
        f"no space left on device in `out` {cfg.out}: {len(done)} of {cfg.num_shards} shards "
        f"({pairs} pairs) are complete and safe, the partial one was removed; free some space "
        "and rerun the same command to resume"
    )


def generate_dataset(cfg: GenerateConfig) -> Path:
    """Generate (or resume) the dataset described by `cfg`; returns index.json's path.

    All user mistakes are raised as UserError before any shard is started. The run
    holds a lock on each shard it makes (`data.shards.ShardLocks`): a second run that would write
    one of them is refused. A full disk removes the partial shard and says what is safe."""
    if cfg.inpainter == "lama":
        cfg = dataclasses.replace(cfg, lama_model=resolve_lama_path(cfg.lama_model))
    mine = rank_shards(cfg)
    synth = build_synthesizer(cfg)  # validates the source (missing files, empty) up front
    prepare_output(cfg, synth.source.left_out)
    todo = [s for s in mine if not is_complete(cfg.out, cfg.prefix, s)]
    locks = lock_shards(cfg, todo)  # refused (and released) when another run is writing one of them
    try:
        todo = [s for s in todo if not is_complete(cfg.out, cfg.prefix, s)]  # another run may have ended meanwhile
        _make(cfg, synth, todo, mine)
    except BaseException as err:
        remove_partial(cfg.out, cfg.prefix, todo)
        if out_of_space(err):
            raise _out_of_space(cfg) from None
        raise
    finally:
        locks.close()
    return write_index(cfg)
