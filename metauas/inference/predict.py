"""`metauas predict`: anomaly maps for a user's own images, one normal prompt at a time.

Per query: the map at the query's own resolution (16-bit PNG, 0..65535 = 0..1, or float32
.npy), an overlay PNG (prompt | query | heatmap) and one JSON line in predictions.jsonl
with the image score (max of the map) and the prompt(s) used. With several prompts each
query takes the most similar one (global features, as `--prompt-mode best`), or all of
them as K shots with `--use-all-prompts`. Queries run in batches behind a progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from metauas.changegen.images import list_images, read_image
from metauas.devices import resolve_device
from metauas.errors import UserError
from metauas.inference.config import MAP_FORMATS, LookupConfig, PredictConfig
from metauas.inference.overlay import overlay_row, write_png
from metauas.inference.prompts import PromptBank, closest, pooled, prompt_features
from metauas.inference.scoring import build_scorer, map_to_numpy, methods_for, to_tensor
from metauas.outputs import prepare_dir


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
        if not cv2.haveImageReader(str(p)):
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


def save_map(path: Path, score_map: np.ndarray, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        np.save(path.with_suffix(".npy"), score_map.astype(np.float32))
        return path.with_suffix(".npy")
    cv2.imwrite(str(path.with_suffix(".png")), np.round(np.clip(score_map, 0, 1) * 65535).astype(np.uint16))
    return path.with_suffix(".png")


def predict(cfg: PredictConfig) -> Path:
    """Score every query; returns the predictions.jsonl path."""
    if cfg.map_format not in MAP_FORMATS:
        raise UserError(f"unknown map format {cfg.map_format!r}: use {'|'.join(MAP_FORMATS)}")
    methods = methods_for(cfg.method)
    if len(methods) != 1:
        raise UserError("predict takes one method: --method model, lookup or mix")
    prompts, queries = list_prompts(cfg), list_queries(cfg.query)
    for p in prompts:
        read_image(p)  # an unreadable prompt is an error before any work
    prepare_dir(cfg.out)  # so is an --out that is a file or not writable
    scorer, meta = build_scorer(cfg.checkpoint, methods, cfg.shot_fusion, LookupConfig(), resolve_device(cfg.device),
                                compile=cfg.compile)
    size = cfg.size or int(meta.get("size", 256))
    bank, cache = PromptBank(prompts, size, scorer), {}
    names = output_names(queries)
    cfg.out.mkdir(parents=True, exist_ok=True)
    lines = cfg.out / "predictions.jsonl"
    with open(lines, "w") as jsonl:
        for i in tqdm(range(0, len(queries), cfg.batch_size), desc="predict", unit="batch", disable=not cfg.progress):
            batch = queries[i:i + cfg.batch_size]
            images = [read_image(q) for q in batch]
            feats = scorer.features(torch.stack([to_tensor(rgb, size) for rgb in images]))
            if cfg.use_all_prompts or len(prompts) == 1:
                chosen = [prompts] * len(batch)
            else:
                nearest = closest(pooled(feats[-1]), bank.vectors(cfg.batch_size), 1)[:, 0]
                chosen = [[prompts[j]] for j in nearest.tolist()]
            maps = scorer.maps(prompt_features(scorer, chosen, bank.tensor, cache), feats, (size, size))[methods[0]]
            for path, name, rgb, m, used in zip(batch, names[i:], images, maps, chosen):
                full = cv2.resize(map_to_numpy(m), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
                map_path = save_map(cfg.out / "maps" / name, full, cfg.map_format)
                overlay = write_png(cfg.out / "overlays" / f"{name}.png",
                                    _overlay(read_image(used[0]), rgb, full, cfg.overlay_side))
                record = {"query": str(path), "score": float(full.max()), "prompt": [str(u) for u in used],
                          "method": methods[0], "map": str(map_path.relative_to(cfg.out)),
                          "overlay": str(overlay.relative_to(cfg.out))}
                jsonl.write(json.dumps(record) + "\n")
    return lines
