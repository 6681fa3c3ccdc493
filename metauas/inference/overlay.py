"""Pictures of anomaly maps: a heatmap over the image, and prompt | query | truth |
prediction strips, shared by predict, evaluate and the demo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from metauas.data.images import draw_mask, encode
from metauas.outputs import write_atomic


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
        tiles.append(draw_mask(q, m))
    tiles.append(heatmap(score_map, q, vmax=vmax))
    sep = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """An RGB (or single-channel) image as a PNG, whole or not at all (`write_atomic`),
    through Python: OpenCV's binding never sees a file name (one that is not UTF-8
    crashes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, encode(rgb, "png"))
