"""Evaluation outputs: metric tables (JSON, CSV, markdown) and heatmap overlays.

Tables list the seven metrics in the paper's Table 1 order, one row per class and method
(model and lookup baseline side by side) and a mean row, and always name the protocol.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from metauas.evaluation.metrics import METRICS


def _rgb(image) -> np.ndarray:
    """RGB uint8 HxWx3 from uint8/float arrays or a 3xHxW / 1x3xHxW tensor in [0, 1]."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    a = a.squeeze(0) if a.ndim == 4 else a
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 2 or a.shape[-1] == 1:
        a = np.repeat(a.reshape(a.shape[0], a.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(a)


def _plane(x) -> np.ndarray:
    a = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, np.float32)
    return a.reshape(a.shape[-2], a.shape[-1])


def heatmap(score_map, base: np.ndarray, alpha: float = 0.5, vmax: float = 1.0) -> np.ndarray:
    """JET colours of scores in [0, vmax] (fixed, not stretched per image: a silent map
    stays blue)."""
    m = np.clip(_plane(score_map) / max(vmax, 1e-12), 0, 1)
    m = cv2.resize(m, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (alpha * colour + (1 - alpha) * base).round().astype(np.uint8)


def overlay_row(prompt, query, mask, score_map, vmax: float = 1.0) -> np.ndarray:
    """One RGB uint8 strip: prompt | query | ground truth (mask tinted red on the query) |
    prediction heatmap on the query; with `mask` None (no ground truth) the truth tile is
    left out. Images are RGB uint8/float [0, 1] arrays or CHW tensors, masks HxW (bool,
    0/1 or 0/255), the map HxW coloured over [0, vmax]; every tile takes the query's size."""
    q = _rgb(query)
    h, w = q.shape[:2]
    tiles = [cv2.resize(_rgb(prompt), (w, h), interpolation=cv2.INTER_AREA), q]
    if mask is not None:
        m = cv2.resize(_plane(mask).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST) > 0.5
        gt = q.copy()
        gt[m] = (0.5 * gt[m] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(gt, contours, -1, (255, 0, 0), 1)
        tiles.append(gt)
    tiles.append(heatmap(score_map, q, vmax=vmax))
    sep = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _fmt(value: float, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * std:.1f}" if std is not None and not math.isnan(std) else text


def markdown_table(rows: Sequence[Mapping]) -> str:
    """Rows {class, method, metrics: {name: value}, std: {name: value} (optional)} in %."""
    header = ["class", "method", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        std = r.get("std") or {}
        cells = [_fmt(r["metrics"][m], std.get(m)) for m in METRICS]
        lines.append("| " + " | ".join([r["class"], r["method"], *cells]) + " |")
    return "\n".join(lines)


def efficiency_line(e: Mapping) -> str:
    parts = []
    for method, info in e.items():
        params = info["parameters"]
        p = f"{params['total'] / 1e6:.2f}M params ({params['learnable'] / 1e6:.2f}M learnable), "
        parts.append(f"{method}: {p}{info['ms_per_image']:.1f} ms/image at {info['size']} px on {info['device']}")
    return "; ".join(parts)


def _extras(cfg: Mapping) -> str:
    """Non-default prompt rotations and the mix weight, when they shaped the numbers."""
    text = ""
    rotations = list(cfg.get("prompt_rotations") or [0])
    if rotations != [0]:
        text += f" · prompt rotations {rotations} ({cfg['shot_fusion']})"
    if "mix" in cfg.get("method", "") or cfg.get("method") == "all":
        text += f" · mix weight {cfg.get('mix_weight')}"
    return text


def _no_nan(value):
    """NaN (an undefined metric) as JSON null, so strict JSON readers accept the file."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def write_tables(out: Path, result: Mapping) -> dict[str, Path]:
    """metrics.json (everything), metrics.csv (one line per class/method) and metrics.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "csv": out / "metrics.csv", "md": out / "metrics.md"}
    paths["json"].write_text(json.dumps(_no_nan(result), indent=2))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "method", *METRICS, *(f"{m} std" for m in METRICS)])
        for r in result["rows"]:
            std = r.get("std") or {}
            writer.writerow([r["class"], r["method"], *(r["metrics"][m] for m in METRICS),
                             *(std.get(m, "") for m in METRICS)])
    cfg = result["config"]
    text = [
        f"# MetaUAS evaluation: {cfg['data']} ({cfg['fmt']})",
        "",
        f"Protocol: **{cfg['protocol']}** · prompts: {cfg['prompt_mode']}, {cfg['shots']}-shot"
        f"{' (' + cfg['shot_fusion'] + ')' if cfg['shots'] > 1 else ''}{_extras(cfg)} · seeds: {cfg['seeds']} · "
        f"size {cfg['size']} · image score: {cfg['image_score']}",
        "",
        markdown_table(result["rows"]),
        "",
        f"Efficiency: {efficiency_line(result['efficiency'])}",
    ]
    if result.get("problems"):
        text += ["", f"Data problems ({len(result['problems'])}):", *(f"- {p}" for p in result["problems"])]
    paths["md"].write_text("\n".join(text) + "\n")
    return paths


def write_html_report(out: Path, result: Mapping) -> Path:
    """report.html: the metric table, the efficiency line and the overlays, in one file."""
    import html

    from metauas.evaluation.html import image_tag, table, write_html

    cfg = result["config"]
    rows = [[r["class"], r["method"], *(_fmt(r["metrics"][m], (r.get("std") or {}).get(m)) for m in METRICS)]
            for r in result["rows"]]
    summary = (f'<p class="note">protocol <b>{cfg["protocol"]}</b> · prompts {cfg["prompt_mode"]}, '
               f'{cfg["shots"]}-shot · runs {", ".join(cfg["seeds"])} · size {cfg["size"]} · image score '
               f'{cfg["image_score"]}</p><p class="note">{html.escape(efficiency_line(result["efficiency"]))}</p>')
    sections = [("Metrics (%)", summary + table(["class", "method", *METRICS], rows))]
    images = []
    for rel in result.get("overlays", []):
        rgb = cv2.cvtColor(cv2.imread(str(out / rel)), cv2.COLOR_BGR2RGB)
        images.append(f"<p class='note'>{html.escape(rel)}</p>{image_tag(rgb, rel)}")
    if images:
        sections.append(("Overlays: prompt | query | ground truth | prediction", "".join(images)))
    if result.get("problems"):
        items = "".join(f"<li>{html.escape(p)}</li>" for p in result["problems"])
        sections.append((f"Data problems ({len(result['problems'])})", f"<ul>{items}</ul>"))
    return write_html(out / "report.html", f"MetaUAS evaluation: {cfg['data']}", sections)
