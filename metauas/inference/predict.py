"""`metauas predict`: anomaly maps and decisions for a user's own images (a thin layer
over the Python API, `api.Segmenter`, that reads folders and writes files).

Per query: the map at the query's own resolution (16-bit PNG, 0..65535 = 0..1, or float32
.npy), an overlay PNG (prompt | query | heatmap, titled with the score) and one row in
predictions.jsonl and predictions.csv with the image score (max of the map in the
model's frame, docs/api.md) and the prompt(s) used. With `--threshold auto|VALUE` also a
binary mask PNG (255 = anomalous pixel) and the decision per query. With several prompts
each query takes the most similar one (global features, as `--prompt-mode best`), or all
of them as K shots with `--use-all-prompts`. `--checkpoint` may be an exported graph
(.onnx, .xml): then nothing here imports torch.

`--out` holds this run's files only: a folder another predict run wrote is cleared of
the files that run listed in its predict-run.json (written before any other file, so a
killed run is cleared too); a folder with anything else in it is refused.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import typing
import warnings
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from metauas.data.images import encode, image_size, read_image
from metauas.errors import UserError
from metauas.inference.api import Segmentation, Segmenter, find_images
from metauas.inference.config import LookupConfig, PredictConfig
from metauas.inference.overlay import overlay_row, titled, write_png
from metauas.outputs import prepare_dir, text_bytes, write_atomic

MANIFEST = "predict-run.json"
TABLES = ("predictions.jsonl", "predictions.csv")

log = logging.getLogger("metauas.predict")


def list_prompts(cfg: PredictConfig) -> list[Path]:
    if bool(cfg.prompts) == (cfg.prompt_dir is not None):
        raise UserError("give normal prompt image(s) with `prompts` or `prompt_dir` (one of them)")
    if cfg.prompt_dir is not None:
        if not cfg.prompt_dir.is_dir():
            raise UserError(f"prompt folder not found: {cfg.prompt_dir}")
        paths = find_images(cfg.prompt_dir, cfg.recursive)
        if not paths:
            raise UserError(f"no images in prompt folder {cfg.prompt_dir}")
        return paths
    for p in cfg.prompts:
        if not p.is_file():
            raise UserError(f"prompt image not found: {p}")
    return list(cfg.prompts)


def list_queries(query: Path, recursive: bool = False, what: str = "query") -> list[Path]:
    if query.is_file():
        return [query]
    if not query.is_dir():
        raise UserError(f"{what} not found: {query}")
    paths = find_images(query, recursive)
    if not paths:
        hint = "" if recursive else " (--recursive searches its subfolders)"
        raise UserError(f"no images in {what} folder {query}{hint}")
    for p in paths:  # header check only: a broken file fails before hours of work, not after
        if image_size(p) is None:  # from the header, read through Python (OpenCV crashes on a name not UTF-8)
            read_image(p)  # raises with the reason
    return paths


def output_names(paths: list[Path], root: Path) -> list[str]:
    """Per query, its path under `root` without suffix (subfolders kept, so a recursive
    run's good/000.png and crack/000.png stay apart); the suffix is kept only where two
    names would collide (000.png beside 000.jpg)."""
    stems = [(p.relative_to(root) if root.is_dir() else Path(p.name)).with_suffix("").as_posix() for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{p.suffix.lstrip('.')}" for s, p in zip(stems, paths)]


def planned_files(cfg: PredictConfig, names: list[str]) -> list[str]:
    """Every file this run may write, relative to --out (the manifest's list)."""
    suffix = ".npy" if cfg.map_format == "npy" else ".png"
    kinds = [("maps", suffix), ("overlays", ".png")] + ([("masks", ".png")] if cfg.threshold is not None else [])
    return [*TABLES, *(f"{folder}/{n}{ext}" for n in names for folder, ext in kinds)]


def claim_out(out: Path, files: list[str]) -> None:
    """Make --out this run's: refuse a folder with files predict did not write; remove
    the files an earlier predict run listed; then record this run's list (see module
    docstring)."""
    prepare_dir(out)
    present = [p for p in out.rglob("*") if p.is_file() and ".tmp-" not in p.name]
    if present:
        manifest = out / MANIFEST
        if not manifest.is_file():
            raise UserError(
                f"`out` {out} is not empty and was not written by metauas predict (no {MANIFEST}): "
                "give a new or empty folder"
            )
        try:
            owned = set(json.loads(manifest.read_text())["files"])
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested beyond reason
            raise UserError(f"`out` {out}: {MANIFEST} is damaged: give a new or empty folder") from None
        foreign = [p for p in present if p.relative_to(out).as_posix() not in owned | {MANIFEST}]
        if foreign:
            raise UserError(
                f"`out` {out} holds files predict did not write ({foreign[0].relative_to(out)}"
                f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}): give a new or empty folder"
            )
        for p in present:
            p.unlink()
        for folder in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    write_atomic(out / MANIFEST, json.dumps({"tool": "metauas predict", "files": files}, indent=1).encode())


def save_map(folder: Path, name: str, score_map: np.ndarray, fmt: str) -> Path:
    """The map as `folder/name.npy` (float32) or `.png` (16 bits), whole or not at all.
    The suffix is joined as text: a query `a.b.png` gives `a.b.png`, not `a.png`
    (`with_suffix` would replace `.b`, and two queries would share a map)."""
    path = folder / f"{name}.{'npy' if fmt == 'npy' else 'png'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, score_map.astype(np.float32))
        return write_atomic(path, buffer.getvalue())
    return write_atomic(path, encode(np.round(np.clip(score_map, 0, 1) * 65535).astype(np.uint16), "png"))


def _segmenter(cfg: PredictConfig, prompts: list[Path]) -> tuple[Segmenter, list[str]]:
    """The API object with the prompts cached and, when asked, the threshold fitted; and
    the warnings it gave (scoring far from the training size), for the command to print."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmenter = Segmenter.load(
            cfg.checkpoint,
            method=cfg.method,
            size=cfg.size,
            device=cfg.device,
            shot_fusion=cfg.shot_fusion,
            mix_weight=cfg.mix_weight,
            lookup=LookupConfig(encoder=cfg.lookup_encoder),
            batch_size=cfg.batch_size,
            compile=cfg.compile,
        )
    segmenter.set_prompts(*prompts, use_all=cfg.use_all_prompts)
    if cfg.threshold == "auto":
        normals = list_queries(cfg.normals, cfg.recursive, "normals") if cfg.normals is not None else None
        segmenter.fit_threshold(normals)
    elif cfg.threshold is not None:
        segmenter.threshold = float(cfg.threshold)
    return segmenter, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


COLUMNS = ("query", "score", "anomalous", "threshold", "prompt", "method", "map", "mask", "overlay")


def _overlay(prompt: np.ndarray, query: np.ndarray, result: Segmentation, side: int, name: str) -> np.ndarray:
    scale = min(1.0, side / max(query.shape[:2]))
    size = (max(1, round(query.shape[1] * scale)), max(1, round(query.shape[0] * scale)))
    q = cv2.resize(query, size, interpolation=cv2.INTER_AREA) if scale < 1 else query
    decision = "" if result.anomalous is None else (" ANOMALOUS" if result.anomalous else " normal")
    return titled(
        overlay_row(prompt, q, None, result.map, contour=result.threshold),
        ["prompt", "query", "heatmap"],
        f"{name}  score {result.score:.4f}{decision}",
    )


def _write(
    cfg: PredictConfig,
    name: str,
    path: Path,
    rgb: np.ndarray,
    result: Segmentation,
    prompts: list[Path],
    segmenter: Segmenter,
) -> dict:
    """One query's files; its row for predictions.jsonl/csv."""
    used = [prompts[i] for i in result.prompts]
    map_path = save_map(cfg.out / "maps", name, result.map, cfg.map_format)
    tiles = _overlay(segmenter.prompt_image(result.prompts[0]), rgb, result, cfg.overlay_side, name)
    overlay = write_png(cfg.out / "overlays" / f"{name}.png", tiles)
    mask = None
    if result.mask is not None:
        mask = write_png(cfg.out / "masks" / f"{name}.png", result.mask.astype(np.uint8) * 255)
    return {
        "query": str(path),
        "score": result.score,
        "anomalous": result.anomalous,
        "threshold": result.threshold,
        "prompt": [str(u) for u in used],
        "method": segmenter.method,
        "map": str(map_path.relative_to(cfg.out)),
        "mask": str(mask.relative_to(cfg.out)) if mask else None,
        "overlay": str(overlay.relative_to(cfg.out)),
    }


def _tables(out: Path, records: list[dict]) -> Path:
    """predictions.jsonl and predictions.csv, each written whole. Numbers must be finite
    (JSON has no NaN). A file name that is not UTF-8 is a \\udcXX escape in the JSON
    (Python's json.loads then os.fsencode gives its bytes back) and its own bytes in the CSV."""
    table = io.StringIO(newline="")
    rows = csv.DictWriter(table, COLUMNS)
    rows.writeheader()
    rows.writerows({**r, "prompt": ";".join(r["prompt"])} for r in records)
    write_atomic(out / TABLES[1], text_bytes(table.getvalue(), exact_names=True))
    return write_atomic(out / TABLES[0], "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode())


def predict(cfg: PredictConfig, warn=lambda message: None) -> Path:
    """Score every query; returns the predictions.jsonl path (predictions.csv beside it).
    `warn` receives each warning (the CLI prints them)."""
    prompts, queries = list_prompts(cfg), list_queries(cfg.query, cfg.recursive)
    queries = [q for q in queries if not q.resolve().is_relative_to(cfg.out.resolve())]  # not our own outputs
    if not queries:
        raise UserError(f"no query images outside `out` {cfg.out}")
    for p in prompts:
        read_image(p)  # an unreadable prompt is an error before any work
    names = output_names(queries, cfg.query)
    claim_out(cfg.out, planned_files(cfg, names))  # a wrong --out: one line before any work
    segmenter, notes = _segmenter(cfg, prompts)
    for note in notes:
        warn(note)
    log.debug(
        "%d prompt(s), %d query image(s), %s at %d px", len(prompts), len(queries), segmenter.method, segmenter.size
    )
    records = []
    for i in tqdm(range(0, len(queries), cfg.batch_size), desc="predict", unit="batch", disable=not cfg.progress):
        batch = queries[i : i + cfg.batch_size]
        images = [read_image(q) for q in batch]
        results = typing.cast(list, segmenter.segment(images))  # a list in, a list out
        for path, name, rgb, result in zip(batch, names[i:], images, results):
            records.append(_write(cfg, name, path, rgb, result, prompts, segmenter))
            log.debug("%s: score %.4f against %s", path, result.score, ", ".join(records[-1]["prompt"]))
    return _tables(cfg.out, records)
