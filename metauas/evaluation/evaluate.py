"""`metauas evaluate`: a checkpoint and/or the lookup baseline on a benchmark, paper-style.

Per run (seed) and class: prompts are chosen by the run's policy (`inference.policy`:
random | best | pool | a prompts file),
queries are scored in batches with both methods from one encoder pass, the class's maps
are kept (float32 at the evaluated size, so memory is bounded by the largest class, not
the benchmark) and reduced to the seven metrics with streaming pixel histograms. Classes
are then averaged per run, and runs give mean ± std (paper: 5 seeds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from metauas.data.images import read_image
from metauas.devices import resolve_device
from metauas.errors import UserError
from metauas.evaluation.config import EvalConfig
from metauas.evaluation.metrics import METRICS, MetricConfig, compute_metrics, f1_at, image_score
from metauas.evaluation.readers import ClassData, Sample, load_mask, read_benchmark
from metauas.evaluation.report import write_html_report, write_tables
from metauas.inference.frame import size_warning
from metauas.inference.overlay import overlay_row, titled, write_png
from metauas.inference.policy import PromptPolicy, prompt_runs
from metauas.inference.prompts import PromptBank, read_prompt_file
from metauas.inference.scoring import Scorer, build_scorer, map_to_numpy, methods_for, to_tensor
from metauas.outputs import prepare_dir

log = logging.getLogger("metauas.evaluate")


@dataclass
class ClassMaps:
    """One class's scored queries, per method."""

    samples: list[Sample] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    prompts: list[list[Path]] = field(default_factory=list)
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)


def evaluated_mask(
    sample: Sample, shape: tuple[int, ...], size: int, protocol: str, problems: list[str]
) -> np.ndarray | None:
    """Mask at the evaluated size: nearest (exact) or bilinear then L > 0 (official)."""
    if sample.label == 0 or sample.mask is None:
        return None
    mask = load_mask(sample.mask, shape)
    if mask is None:
        problems.append(
            f"mask unreadable or not the image's size {shape[:2]} (left out of pixel metrics): {sample.mask}"
        )
        return None
    if protocol == "official":
        return cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR) > 0
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 127


def score_class(
    cfg: EvalConfig, scorer: Scorer, data: ClassData, size: int, bank: PromptBank, problems: list[str]
) -> ClassMaps:
    """All test queries of one class through every method, in batches, each against the
    prompts the bank's policy chooses for it."""
    result = ClassMaps(maps={m: [] for m in scorer.methods})
    samples = data.test
    cache: dict[tuple[Path, ...], list[list[torch.Tensor]]] = {}
    bar = tqdm(range(0, len(samples), cfg.batch_size), desc=data.name, disable=not cfg.progress, leave=False)
    for i in bar:
        batch = samples[i : i + cfg.batch_size]
        images = [read_image(s.path) for s in batch]
        queries = torch.stack([to_tensor(rgb, size) for rgb in images])
        query_feats = scorer.features(queries)
        chosen = bank.choose(query_feats, cfg.batch_size)
        prompt_feats = bank.features(chosen, cache)
        maps = scorer.maps(prompt_feats, query_feats, (size, size))
        for method, m in maps.items():
            result.maps[method].extend(map_to_numpy(x) for x in m)
        result.samples.extend(batch)
        result.prompts.extend(chosen)
        result.masks.extend(
            evaluated_mask(s, rgb.shape, size, cfg.metric.protocol, problems) for s, rgb in zip(batch, images)
        )
    return result


def _per_image_quality(maps: list[np.ndarray], cm: ClassMaps) -> list[tuple[float, int]]:
    """(quality, index) of anomalous queries: pixel AP when a mask exists, else image score."""
    from metauas.evaluation.metrics import average_precision, counts_from_scores

    out = []
    for i, (s, mask) in enumerate(zip(cm.samples, cm.masks)):
        if s.label == 1:
            q = average_precision(counts_from_scores(maps[i], mask)) if mask is not None else float(maps[i].max())
            out.append((q, i))
    return sorted(out)


def write_overlays(
    out: Path, name: str, cm: ClassMaps, size: int, n: int, scale: str = "shared", metric: MetricConfig = MetricConfig()
) -> list[tuple[str, int, Path]]:
    """Titled prompt | query | truth | heatmap strips (with the colour bar of their scale)
    of the n best and n worst anomalous queries; (method, query index, file) of each.
    `scale` shared: model maps over [0, 1], other methods' over the class's maximum (one
    bar for all of a method's strips); per-map: each strip over its own map's maximum."""
    written = []
    for method, maps in cm.maps.items():
        # model maps are probabilities; lookup distances (and blends) are coloured up to the class max
        shared = 1.0 if method == "model" else max(float(m.max()) for m in maps)
        ranked = _per_image_quality(maps, cm)
        worst = ranked[:n]
        best = [r for r in ranked[::-1][:n] if r not in worst]
        picks = [("worst", r) for r in worst] + [("best", r) for r in best]
        for tag, (quality, i) in picks:
            s = cm.samples[i]
            vmax = max(float(maps[i].max()), 1e-6) if scale == "per-map" else shared
            row = overlay_row(
                to_tensor(read_image(cm.prompts[i][0]), size),
                to_tensor(read_image(s.path), size),
                cm.masks[i],
                maps[i],
                vmax,
            )
            titles = ["prompt", "query", *(["ground truth"] if cm.masks[i] is not None else []), "heatmap"]
            heading = f"{name} / {s.defect} / {s.path.name} - {method}, score {image_score(maps[i], metric):.4f}"
            row = titled(row, titles, heading, vmax)
            written.append((method, i, write_png(overlay_path(out, method, name, tag, s), row)))
    return written


def overlay_path(out: Path, method: str, name: str, tag: str, sample: Sample) -> Path:
    """Where a query's overlay goes: the class name and defect type come from the
    benchmark's listing, which the readers checked to be plain names (`outputs.plain_name`),
    and the file's own name, so the path stays under `out`."""
    return out / "overlays" / method / name / f"{tag}-{sample.defect}-{sample.path.stem}.png"


@dataclass
class FirstRun:
    """What the report shows beyond the metric tables, from the first run: every image's
    score, the curves behind the metrics, the fitted thresholds and the overlays drawn."""

    images: list[dict] = field(default_factory=list)
    curves: dict[str, dict[str, dict]] = field(default_factory=dict)  # class -> method -> roc, pr, pro
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> method -> threshold
    overlays: list[str] = field(default_factory=list)

    def add(
        self, cfg: EvalConfig, name: str, cm: ClassMaps, curves: dict, thresholds: dict[str, float], size: int
    ) -> None:
        drawn = (
            write_overlays(cfg.out, name, cm, size, cfg.overlays, cfg.overlay_scale, cfg.metric) if cfg.overlays else []
        )
        self.overlays += [str(p.relative_to(cfg.out)) for _, _, p in drawn]
        links = {(m, i): str(p.relative_to(cfg.out)) for m, i, p in drawn}
        self.curves[name], self.thresholds[name] = curves, thresholds
        for i, s in enumerate(cm.samples):
            self.images.append(
                {
                    "class": name,
                    "path": str(s.path),
                    "label": s.label,
                    "defect": s.defect,
                    "scores": {m: image_score(maps[i], cfg.metric) for m, maps in cm.maps.items()},
                    "overlays": {m: links[m, i] for m in cm.maps if (m, i) in links},
                }
            )


def prompt_plan(cfg: EvalConfig, classes: list[ClassData]) -> dict[PromptPolicy, dict[str, list[Path] | None]]:
    """The evaluation's runs (one prompt policy each), and per run and class the fixed
    prompt paths (None: each query chooses among the class's candidates)."""
    if cfg.prompts_file is not None:
        table = read_prompt_file(cfg.prompts_file, cfg.data if cfg.data.is_dir() else cfg.data.parent)
        missing = [c.name for c in classes if any(c.name not in t for t in table.values())]
        if missing:
            raise UserError(f"prompts file {cfg.prompts_file} has no prompts for: {', '.join(missing)}")
        return {
            PromptPolicy("file", s, cfg.shots, cfg.prompt_rotations): {c.name: t[c.name] for c in classes}
            for s, t in table.items()
        }
    return {
        run: {c.name: None if run.per_query else run.candidates(c.name, c.train) for c in classes}
        for run in prompt_runs(cfg.prompt_mode, cfg.seeds, cfg.shots, cfg.prompt_rotations)
    }


def class_bank(
    run: PromptPolicy,
    fixed: list[Path] | None,
    data: ClassData,
    classes: list[ClassData],
    size: int,
    scorer: Scorer,
    pools: dict[PromptPolicy, PromptBank],
) -> PromptBank:
    """The candidates class `data` chooses its prompts among in this run: its fixed
    prompts, its normal training images (best) or the run's pool (one bank for all
    classes, encoded once)."""
    if fixed is not None:
        return PromptBank(run, fixed, size, scorer)
    if run.mode == "pool":
        if run not in pools:
            pools[run] = PromptBank(
                run, run.candidates(data.name, data.train, [(c.name, c.train) for c in classes]), size, scorer
            )
        return pools[run]
    return PromptBank(run, run.candidates(data.name, data.train), size, scorer)


def fit_thresholds(
    cfg: EvalConfig, run: PromptPolicy, scorer: Scorer, data: ClassData, size: int, fixed: list[Path] | None
) -> dict[str, float]:
    """Per method, the threshold `predict --threshold auto` would fit: the highest image
    score among up to `fit_normals` normal training images other than the prompts, each
    scored against the run's prompts ({} when not applicable: no fixed prompts, the
    official protocol's per-class rescaling, or no spare normal image)."""
    if not cfg.fit_normals or fixed is None or cfg.metric.protocol != "exact":
        return {}
    spare = [p for p in data.train if p not in fixed]
    if not spare:
        return {}
    rng = np.random.default_rng([run.seed or 0, zlib.crc32(os.fsencode(data.name)), 1])
    picked = [spare[i] for i in sorted(rng.choice(len(spare), min(cfg.fit_normals, len(spare)), replace=False))]
    normals = ClassData(data.name, [], [Sample(p, 0, None, "good") for p in picked])
    quiet = dataclasses.replace(cfg, progress=False)
    maps = score_class(quiet, scorer, normals, size, PromptBank(run, fixed, size, scorer), []).maps
    return {m: max(image_score(x, cfg.metric) for x in maps[m]) for m in maps}


def _thresholds(
    per_run: dict[str, dict[str, dict[str, dict]]], classes: list[str], methods: Sequence[str]
) -> list[dict]:
    """Per class and method, the fitted threshold and its F1s (means over the runs that had one)."""
    rows = []
    for name in classes:
        for method in methods:
            runs = [per_run[r][name][method] for r in per_run if "threshold" in per_run[r][name][method]]
            if runs:
                rows.append(
                    {
                        "class": name,
                        "method": method,
                        "runs": len(runs),
                        **{k: float(np.nanmean([r[k] for r in runs])) for k in ("threshold", "I-F1@t", "P-F1@t")},
                    }
                )
    return rows


def _summarise(
    per_run: dict[str, dict[str, dict[str, dict]]], classes: list[str], methods: Sequence[str]
) -> list[dict]:
    """Rows per class and method (mean over runs, std when several) and a mean row."""

    def stats(values: list[dict]) -> tuple[dict, dict | None]:
        arr = {m: np.array([v[m] for v in values], float) for m in METRICS}
        mean = {m: float(np.nanmean(a)) if np.isfinite(a).any() else math.nan for m, a in arr.items()}
        std = {m: float(np.nanstd(a)) if np.isfinite(a).any() else math.nan for m, a in arr.items()}
        return mean, (std if len(values) > 1 else None)

    rows = []
    for name in classes:
        for method in methods:
            mean, std = stats([per_run[r][name][method] for r in per_run])
            rows.append({"class": name, "method": method, "metrics": mean, "std": std})
    for method in methods:
        class_means = []
        for r in per_run:
            per_class = [per_run[r][c][method] for c in classes]
            class_means.append(stats(per_class)[0])
        mean, std = stats(class_means)
        rows.append({"class": "mean", "method": method, "metrics": mean, "std": std})
    return rows


def enough_normals(cfg: EvalConfig, classes: list[ClassData], problems: list[str]) -> list[ClassData]:
    """The classes that have the --shots normal images their prompts are drawn from.

    A class with fewer is left out and listed in the problems (metrics.md, report.html,
    a warning line): K-shot metrics from fewer shots would be another protocol, and one
    small class must not cost the others their results. None left is a UserError."""
    if cfg.prompts_file is not None or cfg.prompt_mode == "pool":
        return classes  # a prompts file names its prompts; pool mode draws one per class
    kept = [c for c in classes if len(c.train) >= cfg.shots]
    for c in classes:
        if c not in kept:
            problems.append(
                f"class {c.name} left out: {len(c.train)} normal training image(s), "
                f"`shots` {cfg.shots} needs at least {cfg.shots}"
            )
    if not kept:
        raise UserError(
            f"no class has {cfg.shots} normal training images for `shots` {cfg.shots}: "
            + "; ".join(problems[-len(classes) :])
        )
    return kept


def score_runs(
    cfg: EvalConfig,
    scorer: Scorer,
    classes: list[ClassData],
    size: int,
    runs: dict[PromptPolicy, dict[str, list[Path] | None]],
    problems: list[str],
) -> tuple[dict[str, dict[str, dict[str, dict]]], FirstRun]:
    """Every run over every class: metrics per run, class and method (with the fitted
    thresholds' F1s), and what the report shows of the first run."""
    per_run: dict[str, dict[str, dict[str, dict]]] = {}
    pools: dict[PromptPolicy, PromptBank] = {}
    first = FirstRun()
    for r, (run, fixed) in enumerate(runs.items()):
        per_run[run.label] = {}
        for data in classes:
            prompts = fixed[data.name]
            log.debug("%s, class %s: %d queries", run.label, data.name, len(data.test))
            bank = class_bank(run, prompts, data, classes, size, scorer, pools)
            cm = score_class(cfg, scorer, data, size, bank, problems if r == 0 else [])
            labels = [s.label for s in cm.samples]
            curves: dict[str, dict] = {m: {} for m in scorer.methods}
            per_run[run.label][data.name] = {
                m: compute_metrics(cm.maps[m], cm.masks, labels, cfg.metric, curves[m] if r == 0 else None)
                for m in scorer.methods
            }
            thresholds = fit_thresholds(cfg, run, scorer, data, size, prompts)
            for m, t in thresholds.items():
                per_run[run.label][data.name][m].update(f1_at(cm.maps[m], cm.masks, labels, t, cfg.metric))
            if r == 0:
                first.add(cfg, data.name, cm, curves, thresholds, size)
    return per_run, first


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation and write metrics.{json,csv,md} and overlays under cfg.out.
    The output folder is checked first: a mistake there must not cost the scoring."""
    prepare_dir(cfg.out)
    bench = read_benchmark(cfg.data, cfg.fmt, list(cfg.classes) or None)
    methods = methods_for(cfg.method)
    scorer, meta = build_scorer(
        cfg.checkpoint,
        methods,
        cfg.shot_fusion,
        cfg.lookup,
        resolve_device(cfg.device),
        cfg.mix_weight,
        compile=cfg.compile,
    )
    size = cfg.size or int(meta.get("size", 256))
    problems = list(bench.problems)
    bench.classes = enough_normals(cfg, bench.classes, problems)
    runs = prompt_plan(cfg, bench.classes)
    note = size_warning(size, meta.get("size"))
    if note:
        problems.append(note)
    per_run, first = score_runs(cfg, scorer, bench.classes, size, runs, problems)
    image_score = "max" if cfg.metric.image_score == "max" else f"mean of top-{cfg.metric.topk}"
    result = {
        "config": cfg.to_dict(),  # `evaluate --config metrics.json` rebuilds this run
        "resolved": {"size": size, "runs": [run.label for run in runs], "image_score": image_score},
        "checkpoint": {k: meta[k] for k in ("step", "size", "encoder", "parameters") if k in meta},
        "rows": _summarise(per_run, [c.name for c in bench.classes], methods),
        "thresholds": _thresholds(per_run, [c.name for c in bench.classes], methods),
        "runs": per_run,
        "efficiency": scorer.efficiency(size),
        "problems": problems,
        "overlays": first.overlays,
        # the first run's per-image scores, fitted thresholds and curves: scores.csv and report.html
        "first_run": {
            "run": next(iter(runs)).label,
            "images": first.images,
            "thresholds": first.thresholds,
            "curves": first.curves,
        },
    }
    write_tables(cfg.out, result)
    write_html_report(cfg.out, result)
    write_prompts(cfg.out, runs)
    return result


def write_prompts(out: Path, runs: dict[PromptPolicy, dict[str, list[Path] | None]]) -> Path | None:
    """prompts.json: the prompts of every run whose prompts were fixed per class (random
    mode, a prompts file), in the `--prompts` format, so `evaluate --prompts
    OUT/prompts.json` replays them exactly."""
    table = {
        str(run.seed): {name: [str(p) for p in paths or ()] for name, paths in fixed.items()}
        for run, fixed in runs.items()
        if run.seed is not None and all(v is not None for v in fixed.values())
    }
    if not table:
        return None
    from metauas.outputs import write_atomic

    return write_atomic(out / "prompts.json", json.dumps(table, indent=2).encode())
