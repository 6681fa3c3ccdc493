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

from metauas.data.images import SkipSource, read_rgb
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
    scores = write_scores(out, result)
    if scores is not None:
        paths["scores"] = scores
    return paths


CURVES = (
    ("roc", "image ROC", "false positive rate", "true positive rate", "I-AUROC", True, "bottom-right"),
    ("pr", "pixel precision-recall", "recall", "precision", "P-AP", False, "top-right"),
    (
        "pro",
        "PRO (pixel FPR <= 0.3)",
        "pixel false positive rate",
        "per-region overlap",
        "P-AUPRO",
        False,
        "bottom-right",
    ),
)


def _class_figures(name: str, methods: Sequence[str], first: Mapping, metrics: Mapping) -> dict[str, str]:
    """Figure file stem -> SVG for one class: ROC, PR, PRO (every method on one plot) and
    per method the score histogram of normal vs anomalous images with its threshold."""
    from metauas.evaluation.html import curve_plot, histogram_plot

    figures = {}
    curves = first["curves"].get(name, {})
    for key, title, x_label, y_label, metric, diagonal, corner in CURVES:
        series = {f"{m} ({metric} {fmt_metric(metrics[m][metric])})": curves.get(m, {}).get(key, []) for m in methods}
        x_range = (0.0, 0.3) if key == "pro" else (0.0, 1.0)
        figures[f"{name}-{key}"] = curve_plot(series, f"{name}: {title}", x_label, y_label, x_range, diagonal, corner)
    images = [i for i in first["images"] if i["class"] == name]
    for m in methods:
        groups = {
            "normal": [i["scores"][m] for i in images if i["label"] == 0],
            "anomalous": [i["scores"][m] for i in images if i["label"] == 1],
        }
        t = first["thresholds"].get(name, {}).get(m)
        figures[f"{name}-scores-{m}"] = histogram_plot(groups, f"{name}: {m} image scores", "image score", t)
    return figures


def write_figures(out: Path, result: Mapping) -> dict[str, str]:
    """figures/*.svg (the report's figures as files, for papers); returns stem -> SVG."""
    first = result.get("first_run")
    if not first:
        return {}
    methods = [r["method"] for r in result["rows"] if r["class"] == "mean"]
    first_run = first["run"]
    figures = {}
    for name in first["curves"]:
        metrics = result["runs"][first_run][name]
        figures.update(_class_figures(name, methods, first, metrics))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for stem, svg in figures.items():
        write_atomic(out / "figures" / f"{stem}.svg", text_bytes(svg))
    return figures


def write_scores(out: Path, result: Mapping) -> Path | None:
    """scores.csv: every test image of the first run, its score and decision per method."""
    first = result.get("first_run")
    if not first or not first["images"]:
        return None
    methods = list(first["images"][0]["scores"])
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(
        ["class", "image", "label", "defect", *(f"{m} score" for m in methods), *(f"{m} anomalous" for m in methods)]
    )
    for i in first["images"]:
        decisions = [_decision(first, i, m) for m in methods]
        writer.writerow(
            [
                i["class"],
                i["path"],
                i["label"],
                i["defect"],
                *(i["scores"][m] for m in methods),
                *("" if d is None else d for d in decisions),
            ]
        )
    return write_atomic(out / "scores.csv", text_bytes(table.getvalue(), exact_names=True))


def _decision(first: Mapping, image: Mapping, method: str) -> bool | None:
    t = first["thresholds"].get(image["class"], {}).get(method)
    return None if t is None else bool(image["scores"][method] > t)


def _image_table(first: Mapping, methods: Sequence[str], anchors: Mapping[str, str]) -> str:
    """One row per test image: score and decision per method, links to its overlays."""
    import html

    head = "".join(f"<th>{html.escape(m)} score</th><th>{html.escape(m)} decision</th>" for m in methods)
    rows = []
    for i in first["images"]:
        cells = []
        for m in methods:
            d = _decision(first, i, m)
            mark = "–" if d is None else ("anomalous" if d else "normal")
            wrong = d is not None and d != bool(i["label"])
            cells.append(f"<td>{i['scores'][m]:.4f}</td><td{' class=wrong' if wrong else ''}>{mark}</td>")
        links = " ".join(
            f'<a href="#{anchors[rel]}">{html.escape(m)}</a>' for m, rel in i["overlays"].items() if rel in anchors
        )
        truth = "normal" if i["label"] == 0 else html.escape(i["defect"])
        rows.append(
            f"<tr><td>{html.escape(i['class'])}</td><td>{html.escape(Path(i['path']).name)}</td>"
            f"<td>{truth}</td>{''.join(cells)}<td>{links}</td></tr>"
        )
    return (
        f'<table class="images"><tr><th>class</th><th>image</th><th>truth</th>{head}<th>overlay</th></tr>'
        f"{''.join(rows)}</table>"
    )


def _threshold_table(result: Mapping) -> str:
    from metauas.evaluation.html import table

    rows = [
        [r["class"], r["method"], f"{r['threshold']:.4f}", r["runs"], fmt_metric(r["I-F1@t"]), fmt_metric(r["P-F1@t"])]
        for r in result["thresholds"]
    ]
    return (
        '<p class="note">fitted as <code>predict --threshold auto</code> fits it: the highest image score among '
        "normal training images other than the prompts (<code>--fit-normals</code>); F1 at it in %, beside "
        "F1max in the metric table; means over runs</p>"
        + table(["class", "method", "threshold", "runs", "I-F1@t", "P-F1@t"], rows)
    )


def _overlay_section(out: Path, result: Mapping) -> tuple[str, dict[str, str]]:
    """The overlays, each with an anchor the per-image table links to."""
    import html

    from metauas.evaluation.html import image_tag

    scale = result["config"].get("overlay_scale", "shared")
    note = (
        '<p class="note">each strip: prompt | query | ground truth | heatmap, titled with class, defect, file, '
        f"method and image score; the bar on the right is the heatmap's scale ({html.escape(scale)}: "
        + (
            "model maps over [0, 1], lookup maps over the class maximum"
            if scale == "shared"
            else "each map over its own maximum"
        )
        + "; <code>--overlay-scale</code>)</p>"
    )
    anchors, parts = {}, [note]
    for n, rel in enumerate(result.get("overlays", [])):
        anchors[rel] = f"overlay-{n}"
        try:  # through Python: a file name that is not UTF-8 never reaches OpenCV
            rgb = read_rgb(out / rel, 1)
        except SkipSource:  # an overlay removed (or damaged) since it was written: left out
            continue
        parts.append(
            f'<figure id="overlay-{n}">{image_tag(rgb, rel)}<figcaption class="note">'
            f'<a href="{html.escape(rel)}">{html.escape(rel)}</a></figcaption></figure>'
        )
    return "".join(parts), anchors


def write_html_report(out: Path, result: Mapping) -> Path:
    """report.html: metrics, thresholds, per-class curves and score histograms, overlays
    and a per-image table, in one self-contained file (figures also as figures/*.svg)."""
    import html

    from metauas.evaluation.html import table, write_html

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
    if result.get("thresholds"):
        sections.append(("Fitted thresholds", _threshold_table(result)))
    figures = write_figures(out, result)
    first = result.get("first_run") or {}
    for name in first.get("curves", {}):
        figs = "".join(svg for stem, svg in figures.items() if stem.startswith(f"{name}-"))
        sections.append((f"{name}: curves and scores (run {first['run']})", f'<div class="figures">{figs}</div>'))
    overlays, anchors = _overlay_section(out, result)
    if result.get("overlays"):
        sections.append(("Overlays", overlays))
    if first and first["images"]:
        methods = list(first["images"][0]["scores"])
        sections.append((f"Every test image (run {first['run']})", _image_table(first, methods, anchors)))
    if result.get("problems"):
        items = "".join(f"<li>{html.escape(p)}</li>" for p in result["problems"])
        sections.append((f"Data problems ({len(result['problems'])})", f"<ul>{items}</ul>"))
    return write_html(out / "report.html", f"MetaUAS evaluation: {cfg['data']}", sections)
