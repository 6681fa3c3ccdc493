"""Evaluation outputs: metric tables (JSON, CSV, markdown) and the HTML report.

Tables list the seven metrics in the paper's Table 1 order, one row per class and method
(model and lookup baseline side by side) and a mean row, and always name the protocol.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from metauas.data.images import read_rgb
from metauas.evaluation.metrics import METRICS
from metauas.outputs import text_bytes, write_atomic


def fmt_metric(value: float, std: float | None = None) -> str:
    """A metric as a table cell: percent with one decimal, `± std` when given, n/a for NaN."""
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
        cells = [fmt_metric(r["metrics"][m], std.get(m)) for m in METRICS]
        lines.append("| " + " | ".join([r["class"], r["method"], *cells]) + " |")
    return "\n".join(lines)


JUDGED = ("I-AUROC", "P-AP", "P-AUPRO")  # the metrics the model is held to against the lookup


def compare(a: Mapping, b: Mapping, metrics: Sequence[str] = JUDGED) -> dict[str, str]:
    """Metric -> "ahead" | "behind" | "within spread" | "tie at 100" for mean row `a`
    against mean row `b` (each {metrics, std}): ahead or behind only when the gap of the
    means is larger than the larger of the two seed stds (the rule of docs/quality.md)."""
    out = {}
    for m in metrics:
        x, y = a["metrics"][m], b["metrics"][m]
        spread = max((a.get("std") or {}).get(m) or 0.0, (b.get("std") or {}).get(m) or 0.0)
        if min(x, y) >= 1.0 - 1e-9:
            out[m] = "tie at 100"
        elif abs(x - y) <= spread:
            out[m] = "within spread"
        else:
            out[m] = "ahead" if x > y else "behind"
    return out


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
    if isinstance(value, float) and not math.isfinite(value):
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
    write_atomic(paths["json"], json.dumps(_no_nan(result), indent=2, allow_nan=False).encode())
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["class", "method", *METRICS, *(f"{m} std" for m in METRICS)])
    for r in result["rows"]:
        std = r.get("std") or {}
        writer.writerow(
            [r["class"], r["method"], *(r["metrics"][m] for m in METRICS), *(std.get(m, "") for m in METRICS)]
        )
    write_atomic(paths["csv"], text_bytes(table.getvalue(), exact_names=True))
    cfg, done = result["config"], result["resolved"]
    text = [
        f"# MetaUAS evaluation: {cfg['data']} ({cfg['fmt']})",
        "",
        f"Protocol: **{cfg['metric']['protocol']}** · prompts: {cfg['prompt_mode']}, {cfg['shots']}-shot"
        f"{' (' + cfg['shot_fusion'] + ')' if cfg['shots'] > 1 else ''}{_extras(cfg)} · runs: "
        f"{', '.join(done['runs'])} · size {done['size']} · image score: {done['image_score']}",
        "",
        markdown_table(result["rows"]),
        "",
        f"Efficiency: {efficiency_line(result['efficiency'])}",
    ]
    if result.get("thresholds"):
        text += [
            "",
            "Fitted thresholds (`--fit-normals`: the highest image score among normal training images "
            "other than the prompts; F1 at it beside F1max, in %):",
            "",
            "| class | method | threshold | I-F1@t | P-F1@t |",
            "|---|---|---|---|---|",
            *(
                f"| {r['class']} | {r['method']} | {r['threshold']:.4f} "
                f"| {fmt_metric(r['I-F1@t'])} | {fmt_metric(r['P-F1@t'])} |"
                for r in result["thresholds"]
            ),
        ]
    if result.get("problems"):
        text += ["", f"Data problems ({len(result['problems'])}):", *(f"- {p}" for p in result["problems"])]
    write_atomic(paths["md"], text_bytes("\n".join(text) + "\n"))
    return paths


def write_html_report(out: Path, result: Mapping) -> Path:
    """report.html: the metric table, the efficiency line and the overlays, in one file."""
    import html

    from metauas.evaluation.html import image_tag, table, write_html

    cfg, done = result["config"], result["resolved"]
    rows = [
        [r["class"], r["method"], *(fmt_metric(r["metrics"][m], (r.get("std") or {}).get(m)) for m in METRICS)]
        for r in result["rows"]
    ]
    summary = (
        f'<p class="note">protocol <b>{cfg["metric"]["protocol"]}</b> · prompts {cfg["prompt_mode"]}, '
        f"{cfg['shots']}-shot · runs {', '.join(done['runs'])} · size {done['size']} · image score "
        f'{done["image_score"]}</p><p class="note">{html.escape(efficiency_line(result["efficiency"]))}</p>'
    )
    sections = [("Metrics (%)", summary + table(["class", "method", *METRICS], rows))]
    images = []
    for rel in result.get("overlays", []):
        rgb = read_rgb(out / rel, 1)  # through Python: a file name that is not UTF-8 never reaches OpenCV
        images.append(f"<p class='note'>{html.escape(rel)}</p>{image_tag(rgb, rel)}")
    if images:
        sections.append(("Overlays: prompt | query | ground truth | prediction", "".join(images)))
    if result.get("problems"):
        items = "".join(f"<li>{html.escape(p)}</li>" for p in result["problems"])
        sections.append((f"Data problems ({len(result['problems'])})", f"<ul>{items}</ul>"))
    return write_html(out / "report.html", f"MetaUAS evaluation: {cfg['data']}", sections)
