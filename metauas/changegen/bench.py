"""`metauas bench generate` and `metauas bench perlin`: speed measured against a floor
in the same run, so the figures mean the same on any machine.

Floor = what every pair costs even with no synthesis: load a source item (decode +
resize; for procedural scenes, render) and encode prompt, query and mask. Each
generation cell synthesises and encodes pairs of one change type (or the default
mix). Cells with N workers run N processes on disjoint sample indices; per-process
caches (folder segmentation) are primed first, so the figures are the steady state.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from metauas.changegen.config import GenerateConfig
from metauas.changegen.pairs import Synthesizer
from metauas.changegen.shards import sample_members
from metauas.data.format import CHANGE_TYPES
from metauas.data.images import encode

_STATE: dict = {}


def _init(cfg: GenerateConfig) -> None:
    import cv2

    from metauas.changegen.run import build_synthesizer

    cv2.setNumThreads(1)
    synth = build_synthesizer(cfg)
    synth.source.prime(cfg.size)
    _STATE.update(cfg=cfg, synth=synth)


def _floor_task(args: tuple[int, int]) -> int:
    start, count = args
    synth, cfg = _STATE["synth"], _STATE["cfg"]
    for i in range(start, start + count):
        item = synth.draw_item(np.random.default_rng([cfg.seed, i]), False, Counter())
        encode(item.image, cfg.image_format, cfg.jpeg_quality)
        encode(item.image, cfg.image_format, cfg.jpeg_quality)
        encode((item.instances[0] if item.instances else item.image[..., 0] > 0).astype(np.uint8) * 255, "png")
    return count


def _gen_task(args: tuple[int, int, str]) -> int:
    start, count, change = args
    base, cfg = _STATE["synth"], _STATE["cfg"]
    if change != "overall":
        cfg = dataclasses.replace(cfg, change_weights={c: float(c == change) for c in CHANGE_TYPES})
    synth = Synthesizer(cfg, base.source, base.inpainter)  # shares the primed source
    for sample in synth.make(list(range(start, start + count))):
        sample_members(cfg, sample)
    return count


def _timed(pool, task, jobs) -> float:
    """Pairs per second of running jobs across the pool (or inline without one)."""
    t = time.perf_counter()
    done = sum(pool.map(task, jobs, chunksize=1)) if pool else sum(map(task, jobs))
    return done / (time.perf_counter() - t)


@dataclasses.dataclass
class BenchRow:
    size: int
    workers: int
    floor: float
    rates: dict[str, float]  # change type or "overall" -> pairs/s


def bench_cell_row(cfg: GenerateConfig, workers: int, pairs: int) -> BenchRow:
    """Floor and every change type at one size and worker count."""
    per = max(1, pairs // workers)
    jobs = lambda offset: [(offset + w * per, per) for w in range(workers)]  # noqa: E731 - a one-line helper, used twice below
    pool = mp.get_context("spawn").Pool(workers, _init, (cfg,)) if workers > 1 else None
    if pool is None:
        _init(cfg)
    try:
        _timed(pool, _gen_task, [(10**6 + j[0], 4, "overall") for j in jobs(0)])  # warm-up
        floor = _timed(pool, _floor_task, jobs(0))
        rates = {}
        for k, change in enumerate((*CHANGE_TYPES, "overall")):
            rates[change] = _timed(pool, _gen_task, [(s, n, change) for s, n in jobs((k + 1) * 10**5)])
    finally:
        if pool:
            pool.close()
            pool.join()
    return BenchRow(cfg.size, workers, floor, rates)


HEADER = ["size", "workers", "floor", *CHANGE_TYPES, "overall", "overall/floor"]


def table_head() -> str:
    return "| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER)


def table_row(r: BenchRow) -> str:
    cells = [str(r.size), str(r.workers), f"{r.floor:.1f}"]
    cells += [f"{r.rates[c]:.1f}" for c in (*CHANGE_TYPES, "overall")]
    cells.append(f"{r.rates['overall'] / r.floor:.2f}")
    return "| " + " | ".join(cells) + " |"


def perlin_rows(sizes: Sequence[int], repeats: int) -> list[tuple[str, int, float, float]]:
    """(method, size, ms per mask, fraction of pixels above 0.5) per method and size; the
    coverage checks that the methods agree in what they produce."""
    from metauas.changegen.perlin import METHODS, perlin_noise

    rows = []
    for size in sizes:
        for method in METHODS:
            rng = np.random.default_rng(0)
            n = max(1, repeats // 8) if method == "pnoise2" else repeats
            t = time.perf_counter()
            cover = [float((perlin_noise(rng, size, size, method)[0] > 0.5).mean()) for _ in range(n)]
            rows.append((method, size, (time.perf_counter() - t) / n * 1000, float(np.mean(cover))))
    return rows


def bench_perlin(sizes: Sequence[int], repeats: int) -> str:
    """Milliseconds per Perlin mask as a markdown table."""
    lines = ["| method | size | ms per mask | mask coverage |", "|---|---|---|---|"]
    lines += [f"| {m} | {s} | {ms:.2f} | {c:.3f} |" for m, s, ms, c in perlin_rows(sizes, repeats)]
    return "\n".join(lines)
