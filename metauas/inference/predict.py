"""`metauas predict`: anomaly maps and decisions for a user's own images (a thin layer
over the Python API, `api.Segmenter`, that reads folders and writes files).

Per query: the map at the query's own resolution (16-bit PNG, 0..65535 = 0..1, or float32
.npy), an overlay PNG (prompt | query | heatmap) and one row in predictions.jsonl and
predictions.csv with the image score (max of the map) and the prompt(s) used. With
`--threshold auto|VALUE` also a binary mask PNG (255 = anomalous pixel) and the decision
per query. With several prompts each query takes the most similar one (global features,
as `--prompt-mode best`), or all of them as K shots with `--use-all-prompts`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from metauas.data.images import encode, image_size, list_images, read_image
from metauas.devices import resolve_device
from metauas.errors import UserError
from metauas.inference.api import Segmentation, Segmenter
from metauas.inference.config import LookupConfig, PredictConfig
from metauas.inference.overlay import overlay_row, write_png
from metauas.inference.scoring import build_scorer, methods_for
from metauas.outputs import prepare_dir, text_bytes, write_atomic


def list_prompts(cfg: PredictConfig) -> list[Path]:
    if bool(cfg.prompts) == (cfg.prompt_dir is not None):
        raise UserError("give normal prompt image(s) with --prompt IMG... or --prompt-dir DIR (one of them)")
    if cfg.prompt_dir is not None:
        if not cfg.prompt_dir.is_dir():
            raise UserError(f"prompt folder not found: {cfg.prompt_dir}")
        paths = list_images(cfg.prompt_dir)
        if not paths:
            raise UserError(f"no images in prompt folder {cfg.prompt_dir}")
        return paths
    for p in cfg.prompts:
        if not p.is_file():
            raise UserError(f"prompt image not found: {p}")
    return list(cfg.prompts)


def list_queries(query: Path) -> list[Path]:
    if query.is_file():
        return [query]
    if not query.is_dir():
        raise UserError(f"query not found: {query}")
    paths = list_images(query)
    if not paths:
        raise UserError(f"no images in query folder {query}")
    for p in paths:  # header check only: a broken file fails before hours of work, not after
        if image_size(p) is None:
            raise UserError(f"cannot read image {p} (not an image or corrupt)")
    return paths


def output_names(paths: list[Path]) -> list[str]:
    """File stems, with the extension appended only where two stems collide."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths]


def _overlay(prompt: np.ndarray, query: np.ndarray, score_map: np.ndarray, side: int) -> np.ndarray:
    scale = min(1.0, side / max(query.shape[:2]))
    size = (max(1, round(query.shape[1] * scale)), max(1, round(query.shape[0] * scale)))
    q = cv2.resize(query, size, interpolation=cv2.INTER_AREA) if scale < 1 else query
    return overlay_row(prompt, q, None, score_map)


def save_map(folder: Path, name: str, score_map: np.ndarray, fmt: str) -> Path:
    """The map as `folder/name.npy` (float32) or `.png` (16 bits), whole or not at all.
    The name is joined as text: a query named `..png` (stem `.`) stays in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, score_map.astype(np.float32))
        return write_atomic(folder / f"{name}.npy", buffer.getvalue())
    data = encode(np.round(np.clip(score_map, 0, 1) * 65535).astype(np.uint16), "png")
    return write_atomic(folder / f"{name}.png", data)


def _segmenter(cfg: PredictConfig, prompts: list[Path]) -> Segmenter:
    """The API object with the prompts cached and, when asked, the threshold fitted."""
    scorer, meta = build_scorer(
        cfg.checkpoint,
        methods_for(cfg.method),
        cfg.shot_fusion,
        LookupConfig(),
        resolve_device(cfg.device),
        compile=cfg.compile,
    )
    segmenter = Segmenter(scorer, meta, cfg.size, cfg.batch_size).set_prompts(*prompts, use_all=cfg.use_all_prompts)
    if cfg.threshold == "auto":
        normals = list_queries(cfg.normals) if cfg.normals is not None else None
        segmenter.fit_threshold(normals)
    elif cfg.threshold is not None:
        segmenter.threshold = float(cfg.threshold)
    return segmenter


COLUMNS = ("query", "score", "anomalous", "threshold", "prompt", "method", "map", "mask", "overlay")


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
    tiles = _overlay(segmenter.prompt_image(result.prompts[0]), rgb, result.map, cfg.overlay_side)
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


def predict(cfg: PredictConfig) -> Path:
    """Score every query; returns the predictions.jsonl path (predictions.csv beside it)."""
    prompts, queries = list_prompts(cfg), list_queries(cfg.query)
    for p in prompts:
        read_image(p)  # an unreadable prompt is an error before any work
    prepare_dir(cfg.out)  # an --out that is a file or not writable: one line before any work
    segmenter = _segmenter(cfg, prompts)
    names = output_names(queries)
    records = []
    for i in tqdm(range(0, len(queries), cfg.batch_size), desc="predict", unit="batch", disable=not cfg.progress):
        batch = queries[i : i + cfg.batch_size]
        images = [read_image(q) for q in batch]
        for path, name, rgb, result in zip(batch, names[i:], images, segmenter.segment(images)):
            records.append(_write(cfg, name, path, rgb, result, prompts, segmenter))
    return write_predictions(cfg.out, records)


def write_predictions(out: Path, records: list[dict]) -> Path:
    """predictions.jsonl and predictions.csv, each whole or not at all. Numbers must be
    finite (JSON has no NaN). A file name that is not UTF-8 is a \\udcXX escape in the
    JSON (Python's json.loads then os.fsencode gives its bytes back) and its own bytes in
    the CSV."""
    table = io.StringIO(newline="")
    rows = csv.DictWriter(table, COLUMNS)
    rows.writeheader()
    rows.writerows({**r, "prompt": ";".join(r["prompt"])} for r in records)
    lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    write_atomic(out / "predictions.csv", text_bytes(table.getvalue(), exact_names=True))
    return write_atomic(out / "predictions.jsonl", lines.encode())
