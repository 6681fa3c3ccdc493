"""A self-contained HTML report: tables, SVG charts drawn here and embedded PNG images.

Everything is inlined (images as data URIs, charts as SVG) so the report is one file
that can be mailed, attached to an issue or opened from a cluster's scratch directory.
The charts (curves, histograms) are hand-written SVG rather than matplotlib: no
dependency, vector output that papers take as it is, and smaller files than the PNGs
matplotlib writes (docs/evaluation.md has the measurement).
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
.figures { display: flex; flex-wrap: wrap; gap: 8px; }
.figures svg { border: 1px solid #ddd; }
figure { margin: 1em 0; }
figure img { width: 100%; max-width: 960px; }
td.wrong { color: #c00; font-weight: bold; }
table.images td, table.images th { padding: 2px 8px; font-size: 0.9em; }
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


METHOD_COLOURS = {"model": "#1f77b4", "lookup": "#d62728", "mix": "#2ca02c"}


def _colour(name: str, i: int) -> str:
    return METHOD_COLOURS.get(name.split(" ")[0], _COLOURS[i % len(_COLOURS)])


class _Axes:
    """Data -> SVG coordinates of one plot area, and its frame, ticks and labels."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], width: int, height: int) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.left, self.right, self.top, self.bottom = 52, width - 12, 30, height - 40
        self.width, self.height = width, height

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / ((self.x1 - self.x0) or 1) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y0) / ((self.y1 - self.y0) or 1) * (self.bottom - self.top)

    def frame(self, title: str, x_label: str, y_label: str, y_ticks: Sequence[float] | None = None) -> list[str]:
        parts = [
            f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="white"/>',
            f'<text x="{self.width / 2:.0f}" y="18" text-anchor="middle" font-size="13" '
            f'font-weight="bold">{html.escape(title)}</text>',
        ]
        decimals = max(0, int(-np.floor(np.log10(max((self.x1 - self.x0) / 5, 1e-9)))))
        for i in range(6):
            fx = self.x0 + i * (self.x1 - self.x0) / 5
            parts.append(
                f'<line x1="{self.x(fx):.1f}" y1="{self.top}" x2="{self.x(fx):.1f}" y2="{self.bottom}" stroke="#eee"/>'
            )
            parts.append(
                f'<text x="{self.x(fx):.1f}" y="{self.bottom + 14}" text-anchor="middle" '
                f'font-size="10">{fx:.{decimals}f}</text>'
            )
        for fy in y_ticks if y_ticks is not None else [self.y0 + i * (self.y1 - self.y0) / 5 for i in range(6)]:
            parts.append(
                f'<line x1="{self.left}" y1="{self.y(fy):.1f}" x2="{self.right}" y2="{self.y(fy):.1f}" stroke="#eee"/>'
            )
            parts.append(
                f'<text x="{self.left - 4}" y="{self.y(fy) + 3:.1f}" text-anchor="end" font-size="10">{fy:.3g}</text>'
            )
        parts += [
            f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
            f'height="{self.bottom - self.top}" fill="none" stroke="#444"/>',
            f'<text x="{(self.left + self.right) / 2:.0f}" y="{self.height - 8}" text-anchor="middle" '
            f'font-size="11">{html.escape(x_label)}</text>',
            f'<text x="12" y="{(self.top + self.bottom) / 2:.0f}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 12 {(self.top + self.bottom) / 2:.0f})">{html.escape(y_label)}</text>',
        ]
        return parts

    def legend(self, entries: Sequence[tuple[str, str]], corner: str = "bottom-right") -> list[str]:
        parts = []
        for i, (label, colour) in enumerate(entries):
            x = self.right - 8 if corner.endswith("right") else self.left + 8
            y = (
                (self.bottom - 10 - 14 * (len(entries) - 1 - i))
                if corner.startswith("bottom")
                else self.top + 14 * (i + 1)
            )
            anchor = "end" if corner.endswith("right") else "start"
            parts.append(
                f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="11" fill="{colour}">'
                f"{html.escape(label)}</text>"
            )
        return parts


def _svg(axes: _Axes, parts: list[str], name: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" data-figure="{html.escape(name)}" '
        f'width="{axes.width}" height="{axes.height}" viewBox="0 0 {axes.width} {axes.height}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )


def curve_plot(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
    corner: str = "bottom-right",
    width: int = 320,
    height: int = 280,
) -> str:
    """A standalone SVG of curves in [x_range] x [0, 1] (ROC, PR, PRO), one colour per
    series, the legend naming each (with its area, when the caller puts it in the name)."""
    axes = _Axes(x_range, (0.0, 1.0), width, height)
    parts = axes.frame(title, x_label, y_label)
    if diagonal:
        parts.append(
            f'<line x1="{axes.x(x_range[0]):.1f}" y1="{axes.y(0):.1f}" x2="{axes.x(x_range[1]):.1f}" '
            f'y2="{axes.y(1):.1f}" stroke="#bbb" stroke-dasharray="4 3"/>'
        )
    entries = []
    for i, (name, points) in enumerate(series.items()):
        colour = _colour(name, i)
        entries.append((name, colour))
        if points:
            poly = " ".join(f"{axes.x(x):.1f},{axes.y(y):.1f}" for x, y in points)
            parts.append(f'<polyline class="curve" fill="none" stroke="{colour}" stroke-width="1.8" points="{poly}"/>')
    return _svg(axes, parts + axes.legend(entries, corner), title)


def histogram_plot(
    groups: Mapping[str, Sequence[float]],
    title: str,
    x_label: str,
    threshold: float | None = None,
    bins: int = 30,
    width: int = 320,
    height: int = 280,
) -> str:
    """A standalone SVG of score histograms (normal vs anomalous), outlined and lightly
    filled so both stay visible where they overlap, with the threshold as a dashed line."""
    values = [v for vs in groups.values() for v in vs] + ([threshold] if threshold is not None else [])
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1e-3
    edges = np.linspace(lo, hi, bins + 1)
    counts = {name: np.histogram(vs, edges)[0] for name, vs in groups.items()}
    top = max([int(c.max()) for c in counts.values() if len(c)] + [1])
    axes = _Axes((lo, hi), (0.0, float(top)), width, height)
    step = max(1, int(np.ceil(top / 5)))
    parts = axes.frame(title, x_label, "images", y_ticks=list(range(0, top + 1, step)))
    colours = {"normal": "#2c7fb8", "anomalous": "#e6550d"}
    entries = []
    for i, (name, c) in enumerate(counts.items()):
        colour = colours.get(name, _COLOURS[i % len(_COLOURS)])
        entries.append((f"{name} ({len(groups[name])})", colour))
        path = " ".join(
            f"{axes.x(edges[j]):.1f},{axes.y(n):.1f} {axes.x(edges[j + 1]):.1f},{axes.y(n):.1f}"
            for j, n in enumerate(c)
        )
        first, last = axes.x(edges[0]), axes.x(edges[-1])
        parts.append(
            f'<polygon class="bars" points="{first:.1f},{axes.y(0):.1f} {path} {last:.1f},{axes.y(0):.1f}" '
            f'fill="{colour}" fill-opacity="0.25" stroke="{colour}" stroke-width="1.5"/>'
        )
    if threshold is not None:
        tx = axes.x(threshold)
        parts.append(
            f'<line class="threshold" x1="{tx:.1f}" y1="{axes.top}" x2="{tx:.1f}" y2="{axes.bottom}" '
            'stroke="#000" stroke-width="1.5" stroke-dasharray="5 3"/>'
        )
        left = tx > (axes.left + axes.right) / 2  # the label on the roomier side of the line
        parts.append(
            f'<text x="{tx + (-3 if left else 3):.1f}" y="{axes.bottom - 6}" font-size="10" '
            f'text-anchor="{"end" if left else "start"}">threshold {threshold:.4g}</text>'
        )
    return _svg(axes, parts + axes.legend(entries, "top-right"), title)
