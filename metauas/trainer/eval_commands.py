"""`metauas evaluate` and `metauas predict` (torch and timm are imported inside the bodies)."""

from __future__ import annotations

from pathlib import Path

import typer

from metauas.errors import UserError

COMPILE_HELP = ("torch.compile encoder and decoder (inductor, frozen weights): faster per image after a "
                "compilation of about a minute per input shape on 2 CPU cores; for long runs. Needs a C++ "
                "compiler on CPU.")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise UserError(f"{option} needs at least one value")
    return values


def evaluate_command(
    data: Path = typer.Option(..., "--data", help="Benchmark root folder (or meta.json for --format meta)."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json/.csv/.md and overlays/."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Trained checkpoint (.pt); not needed for --method lookup."),
    fmt: str = typer.Option("mvtec", "--format", help="Benchmark layout: mvtec | visa | meta | folder."),
    method: str = typer.Option("both", "--method", help="model | lookup (training-free baseline) | mix (blend of both maps, see --mix-weight) | both (model and lookup) | all (model, lookup, mix)."),
    prompt_mode: str = typer.Option("random", "--prompt-mode", help="random (per seed) | best (closest normal image per query) | pool (class-agnostic)."),
    shots: int = typer.Option(1, "--shots", help="Normal prompts per query (K-shot)."),
    shot_fusion: str = typer.Option("features", "--shot-fusion", help="K-shot model: features (average aligned prompt features) | joint (align against one dictionary of all K prompts' positions, DictAS) | mean | max of per-prompt maps."),
    prompt_rotations: str = typer.Option("0", "--prompt-rotations", help="Also use each prompt rotated by these degrees (multiples of 90, comma-separated, e.g. 0,90,180,270) as extra shots, fused by --shot-fusion: for rotation-variant parts."),
    mix_weight: float = typer.Option(0.5, "--mix-weight", help="--method mix: map = (1 - w) * model + w * lookup (a fixed weight; no test-set normalisation)."),
    seeds: str = typer.Option("1,3,5,7,9", "--seeds", help="Comma-separated prompt seeds for --prompt-mode random (the paper's five by default); mean ± std over them. Use one seed for a quick run."),
    size: int = typer.Option(None, "--size", help="Evaluation size in pixels (default: the checkpoint's training size, else 256)."),
    classes: list[str] = typer.Option(None, "--classes", help="Only these classes (repeat or comma-separate)."),
    prompts: Path = typer.Option(None, "--prompts", help="JSON of class -> prompt image(s) (optionally per seed) to replay exactly."),
    protocol: str = typer.Option("exact", "--protocol", help="exact (default) | official (MetaUAS/cflow-ad code, for parity with published tables)."),
    image_score: str = typer.Option("max", "--image-score", help="Image score from the map: max (paper) | topk (mean of the --topk highest pixels)."),
    topk: int = typer.Option(100, "--topk", help="Pixels averaged by --image-score topk."),
    pixel_bins: int = typer.Option(1 << 20, "--pixel-bins", help="Pixel-metric score levels: this many even bins over [2^-8, 1] plus log-spaced ones below (memory stays bounded at any pixel count; max error 2.5e-7 measured); 0 = every distinct score (exact, memory grows with pixels)."),
    smooth: float = typer.Option(None, "--lookup-sigma", help="Gaussian smoothing (pixels) of the lookup baseline's map; 0 = none (default: the baseline's own, 4)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Queries per forward pass."),
    overlays: int = typer.Option(2, "--overlays", help="Best and worst anomalous queries drawn per class and method (0 = none)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
) -> None:
    """Benchmark a checkpoint and the lookup baseline: the seven paper metrics per class."""
    from metauas.trainer.evaluate import EvalConfig, evaluate
    from metauas.trainer.lookup import LookupConfig
    from metauas.trainer.metrics import MetricConfig
    from metauas.trainer.report import efficiency_line, markdown_table

    if image_score not in ("max", "topk"):
        raise UserError(f"unknown image score {image_score!r}: use max|topk")
    names = tuple(c for item in (classes or []) for c in item.split(",") if c)
    cfg = EvalConfig(
        data=data, fmt=fmt, out=out, checkpoint=checkpoint, method=method, prompt_mode=prompt_mode,
        shots=shots, shot_fusion=shot_fusion, seeds=_ints(seeds, "--seeds"), size=size, classes=names,
        prompt_rotations=_ints(prompt_rotations, "--prompt-rotations"), mix_weight=mix_weight,
        prompts_file=prompts, batch_size=batch_size, overlays=overlays, device=device, compile=compile,
        metric=MetricConfig(protocol=protocol, image_score=image_score, topk=topk, pixel_bins=pixel_bins),
        lookup=LookupConfig() if smooth is None else LookupConfig(sigma=smooth),
    )
    result = evaluate(cfg)
    typer.echo(f"protocol: {protocol}")
    typer.echo(markdown_table(result["rows"]))
    typer.echo(f"efficiency: {efficiency_line(result['efficiency'])}")
    if result["problems"]:
        typer.secho(f"warning: {len(result['problems'])} data problem(s), listed in {out / 'metrics.md'}",
                    err=True, fg=typer.colors.YELLOW)
    typer.echo(f"wrote {out / 'metrics.json'}, metrics.csv, metrics.md, report.html")


def predict_command(
    query: Path = typer.Option(..., "--query", help="Query image or folder of query images."),
    out: Path = typer.Option(..., "--out", help="Output folder: maps/, overlays/, predictions.jsonl."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Trained checkpoint (.pt); not needed for --method lookup."),
    prompt: list[Path] = typer.Option(None, "--prompt", help="Normal prompt image (repeat for several)."),
    prompt_dir: Path = typer.Option(None, "--prompt-dir", help="Folder of normal prompt images."),
    method: str = typer.Option("model", "--method", help="model | lookup (training-free baseline) | mix (0.5 model + 0.5 lookup)."),
    use_all_prompts: bool = typer.Option(False, "--use-all-prompts", help="Use every prompt as K shots instead of the closest one."),
    shot_fusion: str = typer.Option("features", "--shot-fusion", help="With --use-all-prompts: features | joint | mean | max."),
    size: int = typer.Option(None, "--size", help="Inference size (default: the checkpoint's training size, else 256)."),
    map_format: str = typer.Option("png16", "--map-format", help="Anomaly map files: png16 (16-bit PNG, 65535 = 1) | npy (float32)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Queries per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
) -> None:
    """Anomaly maps, overlays and scores for your own images against normal prompt(s)."""
    from metauas.trainer.predict import PredictConfig, predict

    cfg = PredictConfig(query=query, out=out, checkpoint=checkpoint, prompts=tuple(prompt or ()),
                        prompt_dir=prompt_dir, method=method, use_all_prompts=use_all_prompts,
                        shot_fusion=shot_fusion, size=size, map_format=map_format,
                        batch_size=batch_size, device=device, compile=compile)
    typer.echo(f"wrote {predict(cfg)}")


def bench_metrics_command(
    images: int = typer.Option(200, "--images", help="Synthetic 256x256 maps in the class (pixels = images x 65536)."),
    bins: str = typer.Option("65536,1048576", "--bins", help="Comma-separated histogram sizes to compare with the exact path."),
    sklearn: bool = typer.Option(True, "--sklearn/--no-sklearn", help="Also time scikit-learn's AUROC + AP on the same pixels."),
) -> None:
    """Pixel metrics: streaming histograms vs exact scores vs scikit-learn (time, memory, error)."""
    from metauas.trainer.metric_bench import MetricBenchConfig, run_metric_bench

    rows = run_metric_bench(MetricBenchConfig(images=images, bins=_ints(bins, "--bins"), sklearn=sklearn))
    typer.echo(f"{images} maps x 256 x 256 = {images * 65536 / 1e6:.1f}M pixels")
    typer.echo("| method | seconds | peak MiB | max abs diff vs exact | P-AUROC | P-AP | P-F1max | P-AUPRO |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["metrics"]
        cells = [f"{m[k]:.6f}" if k in m else "-" for k in ("P-AUROC", "P-AP", "P-F1max", "P-AUPRO")]
        typer.echo(f"| {r['method']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['max_abs_diff']:.2e} | "
                   + " | ".join(cells) + " |")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `evaluate` and `predict` to the main app, `metrics` to `bench`."""
    app.command("evaluate")(evaluate_command)
    app.command("predict")(predict_command)
    bench_app.command("metrics")(bench_metrics_command)
