"""`metauas predict` and `metauas bench model` (torch and timm are imported inside the bodies;
predict on an exported graph imports neither)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from metauas.devices import CHOICES as DEVICE_CHOICES
from metauas.options import progress_option, quiet_option, setup_output, verbose_option

ShotFusion = Literal["features", "joint", "mean", "max"]

COMPILE_HELP = (
    "torch.compile encoder and decoder (inductor, frozen weights): faster per image after a "
    "compilation of about a minute per input shape on 2 CPU cores; for long runs. Needs a C++ "
    "compiler on CPU."
)


def predict_command(
    query: Path = typer.Option(..., "--query", help="Query image or folder of query images."),
    out: Path = typer.Option(..., "--out", help="Output folder: maps/, overlays/, predictions.jsonl."),
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        help="Trained checkpoint (.pt), a pretrained name "
        "(hf:csgaobb/MetaUAS/metauas-256.ckpt) or an exported graph (model.onnx, "
        "model.xml: runs without torch); not needed for --method lookup.",
    ),
    prompt: list[Path] = typer.Option(None, "--prompt", help="Normal prompt image (repeat for several)."),
    prompt_dir: Path = typer.Option(None, "--prompt-dir", help="Folder of normal prompt images."),
    method: Literal["model", "lookup", "mix"] = typer.Option(
        "model", "--method", help="model | lookup (training-free baseline) | mix (0.5 model + 0.5 lookup)."
    ),
    use_all_prompts: bool = typer.Option(
        False, "--use-all-prompts", help="Use every prompt as K shots instead of the closest one."
    ),
    shot_fusion: ShotFusion = typer.Option(
        "features", "--shot-fusion", help="With --use-all-prompts: how K prompts combine (see evaluate -h)."
    ),
    size: int = typer.Option(
        None, "--size", help="Inference size (default: the checkpoint's training size, else 256)."
    ),
    map_format: Literal["png16", "npy"] = typer.Option(
        "png16", "--map-format", help="Anomaly map files: png16 (16-bit PNG, 65535 = 1) | npy (float32)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Queries per forward pass."),
    device: str = typer.Option("auto", "--device", help=DEVICE_CHOICES),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    threshold: Optional[str] = typer.Option(
        None,
        "--threshold",
        help="Also decide: auto (fitted on normal "
        "images: the highest image score among them, see docs/api.md) or a "
        "number in [0, 1]; writes masks/ and an anomalous column.",
    ),
    normals: Optional[Path] = typer.Option(
        None,
        "--normals",
        help="Folder of normal images for --threshold auto (default: the prompts, each scored against the others).",
    ),
    recursive: bool = typer.Option(
        False,
        "--recursive",
        help="Search --query, --prompt-dir and --normals "
        "folders in their subfolders too (outputs keep the subfolders).",
    ),
    progress: bool = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Anomaly maps, overlays, scores and (with --threshold) decisions for your own images."""
    from metauas.inference.predict import PredictConfig, predict

    cfg = PredictConfig(
        query=query,
        out=out,
        checkpoint=checkpoint,
        prompts=tuple(prompt or ()),
        prompt_dir=prompt_dir,
        method=method,
        use_all_prompts=use_all_prompts,
        shot_fusion=shot_fusion,
        size=size,
        map_format=map_format,
        batch_size=batch_size,
        device=device,
        compile=compile,
        threshold=threshold,
        normals=normals,
        recursive=recursive,
        progress=setup_output(quiet, verbose, progress),
    )
    warn = lambda message: typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)  # noqa: E731
    typer.echo(f"wrote {predict(cfg, warn)}")


def bench_model_command(
    size: int = typer.Option(256, "--size", help="Input side in px."),
    pairs: int = typer.Option(4, "--pairs", help="Pairs per timed batch."),
    repeats: int = typer.Option(
        2, "--repeats", help="Timed repeats of each path, taken in turns (the fastest counts)."
    ),
    paper: bool = typer.Option(True, "--paper/--no-paper", help="Also the paper's b4 configuration (official layout)."),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile our path instead of running it eager (inductor, frozen weights; "
        "adds about a minute of compilation per config and input shape on 2 CPU cores).",
    ),
    device: str = typer.Option("cpu", "--device", help="Where to run: cpu | cuda[:N] | auto."),
) -> None:
    """Time split encoder/alignment/decoder and inference pairs/s vs a naive reference.

    'ours' is the model as predict/evaluate run it (batched prompt+query encoder call,
    inference_mode, decoder BatchNorm folded, channels_last; with --compile also compiled);
    the reference runs the same weights image by image with autograd on."""
    import torch

    from metauas.devices import resolve_device
    from metauas.inference.bench import bench_model
    from metauas.model.config import EncoderConfig, ModelConfig

    dev = str(resolve_device(device))
    configs = [("default (lite0)", ModelConfig(encoder=EncoderConfig(weights="none")))]
    if paper:
        configs.append(
            (
                "paper (b4, official)",
                ModelConfig(
                    encoder=EncoderConfig("efficientnet_b4", "none", "official"), fusion="cat", discrepancy_stages=()
                ),
            )
        )
    typer.echo(
        f"size {size}, {pairs} pairs per batch, {dev}, {torch.get_num_threads()} threads, "
        f"{'compiled' if compile else 'eager'}; ms per pair"
    )
    typer.echo(
        "| config | total / learnable params | encoder ms | alignment ms | decoder ms "
        "| reference pairs/s | ours pairs/s | speedup | shared prompt: ref / ours | speedup | max diff |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, cfg in configs:
        r = bench_model(name, cfg, size=size, pairs=pairs, repeats=repeats, compile=compile, device=dev)
        typer.echo(
            f"| {name} | {r.total_params / 1e6:.2f}M / {r.learnable_params / 1e6:.2f}M | {r.encoder_ms:.1f} "
            f"| {r.alignment_ms:.1f} | {r.decoder_ms:.1f} | {r.reference_pairs_s:.2f} | {r.fast_pairs_s:.2f} "
            f"| {r.speedup:.2f}x | {r.reference_shared_pairs_s:.2f} / {r.fast_shared_pairs_s:.2f} "
            f"| {r.shared_speedup:.2f}x | {r.max_abs_diff:.1e} |"
        )


def app_command(
    checkpoint: Optional[str] = typer.Option(
        None, "--checkpoint", help="Checkpoint (.pt) or pretrained name (hf:...); not needed for --method lookup."
    ),
    method: Literal["model", "lookup", "mix"] = typer.Option("model", "--method", help="How maps are made."),
    size: Optional[int] = typer.Option(None, "--size", help="Inference size (default: the checkpoint's)."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (0.0.0.0: every interface; the "
        "page has no authentication, so only on a trusted network).",
    ),
    port: int = typer.Option(7860, "--port", help="Port to listen on (0: any free port; the URL is printed)."),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        min=0.5,
        help="Seconds a client has to send its request, and to take the answer; slower connections are cut.",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_CHOICES),
) -> None:
    """An interactive page: drop normal and query images, see prompt, query, heatmap and mask, download them."""
    import sys

    from metauas.inference.api import Segmenter
    from metauas.inference.app import exposure_warning, serve

    warning = exposure_warning(host)
    if warning:  # before the model loads: the first thing a user sees
        typer.echo(warning, err=True)
    segmenter = Segmenter.load(checkpoint, method=method, size=size, device=device)
    source = checkpoint or "the training-free lookup baseline"
    info = f"{method} from {source}, {segmenter.size} px, on {segmenter.device}"

    def ready(url: str) -> None:
        typer.echo(f"serving {info} on {url} (Ctrl+C to stop)")
        sys.stdout.flush()

    serve(segmenter, host, port, info, ready, timeout)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `predict` and `app` to the main app, `model` to `bench`."""
    app.command("predict")(predict_command)
    app.command("app")(app_command)
    bench_app.command("model")(bench_model_command)
