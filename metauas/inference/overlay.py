"""Pictures of anomaly maps: a heatmap over the image, and prompt | query | truth |
heatmap strips, titled and with a colour bar, shared by predict, evaluate and the demo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from metauas.data.images import draw_mask, drawable
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
    m: np.ndarray = np.clip(_plane(score_map) / max(vmax, 1e-12), 0, 1)
    m = cv2.resize(m, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (alpha * colour + (1 - alpha) * base).round().astype(np.uint8)


def overlay_row(prompt, query, mask, score_map, vmax: float = 1.0, contour: float | None = None) -> np.ndarray:
    """One RGB uint8 strip: prompt | query | ground truth (mask tinted red on the query) |
    prediction heatmap on the query; with `mask` None (no ground truth) the truth tile is
    left out. Images are RGB uint8/float [0, 1] arrays or CHW tensors, masks HxW (bool,
    0/1 or 0/255), the map HxW coloured over [0, vmax]; every tile takes the query's size.
    `contour`: a threshold whose region is outlined in white on the heatmap."""
    q = _rgb(query)
    h, w = q.shape[:2]
    tiles = [cv2.resize(_rgb(prompt), (w, h), interpolation=cv2.INTER_AREA), q]
    if mask is not None:
        m = cv2.resize(_plane(mask).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST) > 0.5
        tiles.append(draw_mask(q, m))
    heat = heatmap(score_map, q, vmax=vmax)
    if contour is not None:
        above = cv2.resize(_plane(score_map), (w, h), interpolation=cv2.INTER_LINEAR) > contour
        lines, _ = cv2.findContours(above.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(heat, lines, -1, (255, 255, 255), max(1, w // 256))
    tiles.append(heat)
    sep = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float) -> None:
    """Titles hold names from data (classes, files): OpenCV gets them `drawable`."""
    thick = max(1, round(scale * 2))
    cv2.putText(img, drawable(text), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)


def colour_bar(height: int, vmax: float = 1.0, width: int = 14) -> np.ndarray:
    """A vertical JET bar, 0 at the bottom and `vmax` at the top, labelled at both ends
    and the middle (the scale the heatmap tiles beside it use)."""
    ramp = np.linspace(255, 0, max(height - 16, 2)).astype(np.uint8)[:, None].repeat(width, axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = np.full((height, width + 46, 3), 255, np.uint8)
    out[8 : 8 + len(bar), 2 : 2 + width] = bar
    for frac in (0.0, 0.5, 1.0):
        y = round(8 + (1 - frac) * (len(bar) - 1))
        _text(out, f"{frac * vmax:.2g}", width + 5, min(max(y + 4, 10), height - 2), 0.35)
    return out


def titled(strip: np.ndarray, titles: list[str], heading: str | None = None, vmax: float = 1.0) -> np.ndarray:
    """`strip` (equal tiles separated by 2 px, as `overlay_row` makes) with each tile's
    title above it, an optional heading line above those, and the colour bar of the
    heatmap's scale [0, vmax] on the right."""
    h, w = strip.shape[:2]
    tile = (w - 2 * (len(titles) - 1)) // len(titles)
    scale = float(np.clip(tile / 320, 0.35, 0.8))
    line = round(28 * scale) + 6
    rows = (2 if heading else 1) * line
    top = np.full((rows, w, 3), 255, np.uint8)
    if heading:
        _text(top, heading, 4, line - 6, scale)
    for i, title in enumerate(titles):
        _text(top, title, i * (tile + 2) + 4, rows - 6, scale)
    body = np.concatenate([top, strip], axis=0)
    return np.concatenate([body, colour_bar(len(body), vmax)], axis=1)


def write_png(path: Path, image: np.ndarray) -> Path:
    """An RGB (or grey) uint8 image as a PNG, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, png = cv2.imencode(".png", data)
    if not ok:
        raise ValueError(f"could not encode {path.name} as PNG")
    return write_atomic(path, png.tobytes())
