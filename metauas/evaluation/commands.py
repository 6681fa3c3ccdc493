"""`metauas evaluate` and `metauas bench metrics` (torch and timm are imported inside the bodies)."""

from __future__ import annotations

import typer

from metauas.configs import parse_ints
from metauas.evaluation.config import EvalConfig
from metauas.options import ConfigCommand, add_command, config_command


@config_command(ConfigCommand(EvalConfig, section="config"))
def evaluate_command(cfg: EvalConfig) -> None:
    """Benchmark a checkpoint and the lookup baseline: the seven paper metrics per class.

    `--config OUT/metrics.json` repeats an evaluation (metrics.json records its config);
    options typed beside it override it."""
    from metauas.model.hub import fetch_first

    fetch_first(cfg.checkpoint)
    from metauas.evaluation.evaluate import evaluate
    from metauas.evaluation.report import efficiency_line, markdown_table

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
    add_command(app, "evaluate", evaluate_command)
    add_command(bench_app, "metrics", bench_metrics_command)
