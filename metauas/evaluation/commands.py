"""`metauas evaluate` and `metauas bench metrics` (torch and timm are imported inside the bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from metauas.configs import default
from metauas.devices import CHOICES as DEVICE_CHOICES
from metauas.errors import UserError
from metauas.evaluation.config import EvalConfig
from metauas.inference.commands import COMPILE_HELP, ShotFusion
from metauas.options import (
    build_config,
    config_option,
    parse_ints,
    progress_option,
    quiet_option,
    setup_output,
    verbose_option,
)


def _d(field: str):
    return default(EvalConfig, field)


# evaluate's options -> EvalConfig fields, where the names differ or the field is nested
FIELDS = {
    "protocol": "metric.protocol",
    "image_score": "metric.image_score",
    "score_topk": "metric.topk",
    "pixel_bins": "metric.pixel_bins",
    "lookup_sigma": "lookup.sigma",
    "prompts": "prompts_file",
    **{
        name: name
        for name in (
            "data",
            "out",
            "checkpoint",
            "fmt",
            "method",
            "prompt_mode",
            "shots",
            "shot_fusion",
            "prompt_rotations",
            "mix_weight",
            "seeds",
            "size",
            "classes",
            "batch_size",
            "overlays",
            "overlay_scale",
            "fit_normals",
            "device",
            "compile",
            "progress",
        )
    },
}


def evaluate_command(
    ctx: typer.Context,
    config: Optional[Path] = config_option(),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="Benchmark root folder (or meta.json for --format "
        "meta, split_csv/1cls.csv for --format visa). Required unless --config names it.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder: metrics.json/.csv/.md, report.html and overlays/. Required."
    ),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Trained checkpoint (.pt); not needed for --method lookup."
    ),
    fmt: Literal["mvtec", "visa", "meta", "folder"] = typer.Option(
        _d("fmt"),
        "--format",
        help="Benchmark layout: mvtec "
        "(also GoodsAD) | visa (raw download or prepare_data.py's "
        "folder, detected) | meta | folder (docs/evaluation.md).",
    ),
    method: Literal["model", "lookup", "mix", "both", "all"] = typer.Option(
        _d("method"),
        "--method",
        help="model | lookup (training-free baseline) | mix (blend of both maps, see "
        "--mix-weight) | both (model and lookup) | all (model, lookup, mix).",
    ),
    prompt_mode: Literal["random", "best", "pool"] = typer.Option(
        _d("prompt_mode"),
        "--prompt-mode",
        help="random (per seed) | best (closest normal image per query) | pool (class-agnostic).",
    ),
    shots: int = typer.Option(_d("shots"), "--shots", help="Normal prompts per query (K-shot)."),
    shot_fusion: ShotFusion = typer.Option(
        _d("shot_fusion"),
        "--shot-fusion",
        help="K-shot model: features (average aligned prompt features) | "
        "joint (align against one dictionary of all K prompts' positions, DictAS) | mean | max of per-prompt maps.",
    ),
    prompt_rotations: str = typer.Option(
        ",".join(map(str, _d("prompt_rotations"))),
        "--prompt-rotations",
        help="Also use each prompt rotated by "
        "these degrees (multiples of 90, comma-separated, e.g. 0,90,180,270) as extra shots, fused by "
        "--shot-fusion: for rotation-variant parts.",
    ),
    mix_weight: float = typer.Option(
        _d("mix_weight"),
        "--mix-weight",
        help="--method mix: map = (1 - w) * model + w * lookup (a fixed weight; no test-set normalisation).",
    ),
    seeds: str = typer.Option(
        ",".join(map(str, _d("seeds"))),
        "--seeds",
        help="Comma-separated prompt seeds for "
        "--prompt-mode random|pool (the paper's five by default); mean ± std over them. "
        "Use one seed for a quick run.",
    ),
    size: Optional[int] = typer.Option(
        None, "--size", help="Evaluation size in pixels (default: the checkpoint's training size, else 256)."
    ),
    classes: Optional[list[str]] = typer.Option(
        None, "--classes", help="Only these classes (repeat or comma-separate)."
    ),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help="JSON of class -> prompt image(s) (optionally per seed) to replay exactly."
    ),
    protocol: Literal["exact", "official"] = typer.Option(
        _d("metric.protocol"),
        "--protocol",
        help="exact (default) | official (MetaUAS/cflow-ad code, for parity with published tables).",
    ),
    image_score: Literal["max", "topk"] = typer.Option(
        _d("metric.image_score"),
        "--image-score",
        help="Image score from the map: max (paper) | topk (mean of the --score-topk highest pixels).",
    ),
    score_topk: int = typer.Option(_d("metric.topk"), "--score-topk", help="Pixels averaged by --image-score topk."),
    pixel_bins: int = typer.Option(
        _d("metric.pixel_bins"),
        "--pixel-bins",
        help="Pixel-metric score levels: this "
        "many even bins over [2^-8, 1] plus log-spaced ones below (memory stays bounded "
        "at any pixel count; max error 2.5e-7 measured); 0 = every distinct score "
        "(exact, memory grows with pixels).",
    ),
    lookup_sigma: float = typer.Option(
        _d("lookup.sigma"), "--lookup-sigma", help="Gaussian smoothing (pixels) of the lookup baseline's map; 0 = none."
    ),
    batch_size: int = typer.Option(_d("batch_size"), "--batch-size", help="Queries per forward pass."),
    overlays: int = typer.Option(
        _d("overlays"), "--overlays", help="Best and worst anomalous queries drawn per class and method (0 = none)."
    ),
    overlay_scale: Literal["shared", "per-map"] = typer.Option(
        _d("overlay_scale"),
        "--overlay-scale",
        help="Heatmap colours of the overlays: shared (model over [0, 1], "
        "lookup over the class maximum; strips comparable) | per-map (each over its own maximum).",
    ),
    fit_normals: int = typer.Option(
        _d("fit_normals"),
        "--fit-normals",
        help="Normal training images (besides the "
        "prompts) a decision threshold is fitted on per class, as predict --threshold "
        "auto does; its image/pixel F1 is reported beside F1max (0 = off).",
    ),
    device: str = typer.Option(_d("device"), "--device", help=DEVICE_CHOICES),
    compile: bool = typer.Option(_d("compile"), "--compile", help=COMPILE_HELP),
    progress: bool = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Benchmark a checkpoint and the lookup baseline: the seven paper metrics per class.

    `--config OUT/metrics.json` repeats an evaluation (metrics.json records its config);
    options typed beside it override it."""
    from metauas.evaluation.evaluate import evaluate
    from metauas.evaluation.report import efficiency_line, markdown_table

    values = dict(locals())
    values.update(
        progress=setup_output(quiet, verbose, progress),
        seeds=parse_ints(seeds, "--seeds"),
        prompt_rotations=parse_ints(prompt_rotations, "--prompt-rotations"),
        classes=tuple(c for item in (classes or []) for c in item.split(",") if c),
    )
    if out is None or (config is None and data is None):
        raise UserError("give --data DIR and --out DIR (or --config OUT/metrics.json with --out)")
    cfg = build_config(EvalConfig, ctx, values, FIELDS, config, section="config")
    result = evaluate(cfg)
    typer.echo(f"protocol: {cfg.metric.protocol}")
    typer.echo(markdown_table(result["rows"]))
    typer.echo(f"efficiency: {efficiency_line(result['efficiency'])}")
    for problem in result["problems"]:
        if problem.startswith("class ") and " left out: " in problem:
            typer.secho(f"warning: {problem}", err=True, fg=typer.colors.YELLOW)
    if result["problems"]:
        typer.secho(
            f"warning: {len(result['problems'])} data problem(s), listed in {cfg.out / 'metrics.md'}",
            err=True,
            fg=typer.colors.YELLOW,
        )
    typer.echo(f"wrote {cfg.out / 'metrics.json'}, metrics.csv, metrics.md, scores.csv, report.html, figures/")


def bench_metrics_command(
    images: int = typer.Option(200, "--images", help="Synthetic 256x256 maps in the class (pixels = images x 65536)."),
    bins: str = typer.Option(
        "65536,1048576", "--bins", help="Comma-separated histogram sizes to compare with the exact path."
    ),
    sklearn: bool = typer.Option(
        True, "--sklearn/--no-sklearn", help="Also time scikit-learn's AUROC + AP on the same pixels."
    ),
) -> None:
    """Pixel metrics: streaming histograms vs exact scores vs scikit-learn (time, memory, error)."""
    from metauas.evaluation.bench import MetricBenchConfig, run_metric_bench

    rows = run_metric_bench(MetricBenchConfig(images=images, bins=parse_ints(bins, "--bins"), sklearn=sklearn))
    typer.echo(f"{images} maps x 256 x 256 = {images * 65536 / 1e6:.1f}M pixels")
    typer.echo("| method | seconds | peak MiB | max abs diff vs exact | P-AUROC | P-AP | P-F1max | P-AUPRO |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["metrics"]
        cells = [f"{m[k]:.6f}" if k in m else "-" for k in ("P-AUROC", "P-AP", "P-F1max", "P-AUPRO")]
        typer.echo(
            f"| {r['method']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['max_abs_diff']:.2e} | "
            + " | ".join(cells)
            + " |"
        )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `evaluate` to the main app, `metrics` to `bench`."""
    app.command("evaluate")(evaluate_command)
    bench_app.command("metrics")(bench_metrics_command)
