"""`metauas bench model` and `metauas bench train` (heavy imports inside the bodies)."""

from __future__ import annotations


import typer


def bench_model_command(
    size: int = typer.Option(256, "--size", help="Input side in px."),
    pairs: int = typer.Option(4, "--pairs", help="Pairs per timed batch."),
    repeats: int = typer.Option(2, "--repeats", help="Timed repeats of each path, taken in turns (the fastest counts)."),
    paper: bool = typer.Option(True, "--paper/--no-paper", help="Also the paper's b4 configuration (official layout)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile our path instead of running it eager (inductor, frozen weights; "
                                 "adds about a minute of compilation per config and input shape on 2 CPU cores)."),
) -> None:
    """Time split encoder/alignment/decoder and inference pairs/s vs a naive reference.

    'ours' is the model as predict/evaluate run it (batched prompt+query encoder call,
    inference_mode, decoder BatchNorm folded, channels_last; with --compile also compiled);
    the reference runs the same weights image by image with autograd on."""
    import torch

    from metauas.inference.bench import bench_model
    from metauas.model.encoder import EncoderConfig
    from metauas.model.network import ModelConfig

    configs = [("default (lite0)", ModelConfig(encoder=EncoderConfig(weights="none")))]
    if paper:
        configs.append(("paper (b4, official)", ModelConfig(encoder=EncoderConfig("efficientnet_b4", "none", "official"), fusion="cat")))
    typer.echo(f"size {size}, {pairs} pairs per batch, {torch.get_num_threads()} threads, "
               f"{'compiled' if compile else 'eager'}; ms per pair")
    typer.echo("| config | total / learnable params | encoder ms | alignment ms | decoder ms "
               "| reference pairs/s | ours pairs/s | speedup | shared prompt: ref / ours | speedup | max diff |")
    typer.echo("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, cfg in configs:
        r = bench_model(name, cfg, size=size, pairs=pairs, repeats=repeats, compile=compile)
        typer.echo(f"| {name} | {r.total_params / 1e6:.2f}M / {r.learnable_params / 1e6:.2f}M | {r.encoder_ms:.1f} "
                   f"| {r.alignment_ms:.1f} | {r.decoder_ms:.1f} | {r.reference_pairs_s:.2f} | {r.fast_pairs_s:.2f} "
                   f"| {r.speedup:.2f}x | {r.reference_shared_pairs_s:.2f} / {r.fast_shared_pairs_s:.2f} "
                   f"| {r.shared_speedup:.2f}x | {r.max_abs_diff:.1e} |")


def bench_train_command(
    shards: str = typer.Option(None, "--shards", help="Shards to read (default: 256 builtin pairs generated to a temp dir)."),
    size: int = typer.Option(256, "--size", help="Training input side in px."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per batch."),
    workers: int = typer.Option(2, "--workers", help="Loader worker processes."),
    batches: int = typer.Option(16, "--batches", help="Loader batches timed."),
    steps: int = typer.Option(3, "--steps", help="Training steps timed."),
) -> None:
    """Loader pairs/s (decode + augment) vs training pairs/s, and their ratio (target >= 3)."""
    from metauas.trainer.bench import bench_train, bench_train_builtin
    from metauas.model.network import ModelConfig

    if shards is None:
        r = bench_train_builtin(256, ModelConfig(), size, batch_size, workers, batches, steps)
    else:
        r = bench_train(shards, ModelConfig(), size, batch_size, workers, batches, steps)
    typer.echo(f"size {size}, batch {batch_size}, {workers} loader workers")
    typer.echo(f"loader: {r.loader_pairs_s:.1f} pairs/s   training: {r.train_pairs_s:.2f} pairs/s   "
               f"ratio: {r.ratio:.1f}x (target >= 3x)")
