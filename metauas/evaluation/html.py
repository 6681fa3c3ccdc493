"""A self-contained HTML report: tables, an SVG line chart and embedded PNG images.

Everything is inlined (images as data URIs, the chart as SVG) so the report is one file
that can be mailed, attached to an issue or opened from a cluster's scratch directory.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from metauas.outputs import text_bytes, write_atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; image-rendering: pixelated; }
.note { color: #555; font-size: 0.9em; }
"""
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an RGB uint8 image as a PNG data URI."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode image as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def image_tag(rgb: np.ndarray, alt: str) -> str:
    return f'<img src="{png_data_uri(rgb)}" alt="{html.escape(alt)}">'


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; floats are shown with three decimals, NaN as an en dash."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.3f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str, width: int = 640, height: int = 260
) -> str:
    """An inline SVG chart of one or more (x, y) series sharing both axes."""
    points = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not points:
        return '<p class="note">no data points yet</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 40

    def xy(x: float, y: float) -> str:
        px = pad + (x - x0) / (x1 - x0) * (width - 2 * pad)
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>',
    ]
    for i, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        poly = " ".join(xy(x, y) for x, y in pts if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{poly}"/>')
        parts.append(
            f'<text x="{pad + 8}" y="{pad + 16 + 14 * i}" fill="{colour}" font-size="12">{html.escape(name)}</text>'
        )
    labels = [
        (pad, height - pad + 14, f"{x0:g}"),
        (width - pad, height - pad + 14, f"{x1:g}"),
        (4, height - pad, f"{y0:.3g}"),
        (4, pad + 4, f"{y1:.3g}"),
        (width / 2, height - 6, x_label),
        (4, pad - 10, y_label),
    ]
    parts += [f'<text x="{x}" y="{y}" font-size="11">{html.escape(t)}</text>' for x, y, t in labels]
    parts.append("</svg>")
    return "".join(parts)


def write_html(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write `sections` ((heading, html body) pairs) as one page, atomically."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{body}</body></html>"
    )
    return write_atomic(path, text_bytes(page))
