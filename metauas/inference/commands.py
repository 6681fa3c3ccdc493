"""`metauas predict`, `app`, `export` and `bench model` (torch and timm are imported inside
the bodies; predict on an exported graph imports neither)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from metauas.errors import UserError
from metauas.inference.config import (
    DEFAULT_METHOD,
    LOOKUP_ENCODER,
    LOOKUP_ENCODER_HELP,
    MIX_RULE,
    MIX_WEIGHT,
    LookupConfig,
    Method,
    PredictConfig,
)
from metauas.model.config import GraphFormat
from metauas.model.graphs import MAX_SHOTS
from metauas.options import (
    ConfigCommand,
    add_command,
    config_command,
    field_option,
)
from metauas.outputs import prepare_dir

if TYPE_CHECKING:  # loaded on use: the CLI starts without torch
    from metauas.model.network import MetaUAS


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


@config_command(ConfigCommand(PredictConfig, config_file=False))
def predict_command(cfg: PredictConfig) -> None:
    """Anomaly maps, overlays, scores and (with --threshold) decisions for your own images."""
    from metauas.model.hub import fetch_first

    fetch_first(cfg.checkpoint)
    from metauas.inference.predict import predict

    written = predict(cfg, _warn)
    typer.echo(f"wrote {written}")


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
    method: Optional[Method] = field_option(PredictConfig, "method"),
    mix_weight: float = field_option(PredictConfig, "mix_weight"),
    lookup_encoder: str = field_option(PredictConfig, "lookup_encoder"),
    size: Optional[int] = field_option(PredictConfig, "size"),
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
    device: str = field_option(PredictConfig, "device"),
) -> None:
    """An interactive page: drop normal and query images, see prompt, query, heatmap and mask, download them."""
    import sys

    from metauas.model.hub import fetch_first

    fetch_first(checkpoint)  # offline, a pretrained name fails in a moment, before torch loads
    from metauas.inference.api import Segmenter
    from metauas.inference.app import exposure_warning, serve

    warning = exposure_warning(host)
    if warning:  # before the model loads: the first thing a user sees
        typer.echo(warning, err=True)
    lookup = LookupConfig(encoder=lookup_encoder)
    segmenter = Segmenter.load(
        checkpoint, method=method, mix_weight=mix_weight, lookup=lookup, size=size, device=device
    )
    source = checkpoint or "the training-free lookup baseline"
    info = f"{segmenter.method} from {source}, {segmenter.size} px, on {segmenter.device}"

    def ready(url: str) -> None:
        typer.echo(f"serving {info} on {url} (Ctrl+C to stop)")
        sys.stdout.flush()

    serve(segmenter, host, port, info, ready, timeout)


def _check_export_target(out: Path, suffix: str, fmt: str, threshold: float | None) -> None:
    """The graph's file name fits its format, the threshold is a probability, the folder is writable."""
    if out.suffix != suffix or out.is_dir():
        raise UserError(f"--out {out}: --format {fmt} writes a file name ending in {suffix}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {threshold}")
    prepare_dir(out.parent, f"--out {out}: its folder")


SHOTS_HELP = (
    "How many prompt views the graphs compare each query with at once, fused inside them as PyTorch "
    "fuses K shots: the normal images of predict --use-all-prompts / set_prompts(..., use_all=True), "
    "times the rotations of set_prompts(..., rotations=...). Fixed in the graph; 1: one normal image per query."
)


def _load_for_export(checkpoint: str, size: int | None) -> tuple[MetaUAS, dict, int]:
    """The checkpoint's model, its metadata and the side the graphs take."""
    from metauas.model.checkpoint import load_model
    from metauas.model.hub import resolve_checkpoint

    model, meta = load_model(resolve_checkpoint(checkpoint))
    side = size or int(meta.get("size", 256))
    if side < 32 or side % 32:
        raise UserError(f"--size must be a positive multiple of 32, got {side}")
    return model, meta, side


def _method_head(model: MetaUAS, method: str, lookup: LookupConfig, mix_weight: float) -> tuple[Any, Any]:
    """The encoder the graphs run (the model's, the lookup's, or both paired) and the head
    computing `method` from its features."""
    from metauas.inference.scoring import Scorer, scoring_encoder

    encoder = scoring_encoder((method,), lookup, model)
    return encoder, Scorer(encoder, model, (method,), lookup=lookup, mix_weight=mix_weight).head()


def export_command(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint (.pt) or pretrained name (hf:...)."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="The graph to write: model.onnx (--format onnx) or model.xml "
        "(--format openvino, with model.bin beside it); with --cached-prompt also "
        "model-encoder.* and model-head.* beside it.",
    ),
    fmt: GraphFormat = typer.Option("onnx", "--format", help="onnx (onnxruntime) | openvino (OpenVINO IR, float32)."),
    size: Optional[int] = typer.Option(
        None, "--size", help="Input side the graphs take (default: the checkpoint's training size)."
    ),
    cached_prompt: bool = typer.Option(
        False,
        "--cached-prompt",
        help="Also an encoder graph and a head graph: "
        "the normal image is encoded once, and several normal images can be "
        "chosen from per query.",
    ),
    method: Method = typer.Option(
        DEFAULT_METHOD,
        "--method",
        help="What the graph's map is: model (the trained model) | lookup (the training-free "
        f"baseline, on --lookup-encoder) | mix ({MIX_RULE}, see --mix-weight), "
        "computed inside the graph from one pass of the encoders.",
    ),
    mix_weight: float = typer.Option(
        MIX_WEIGHT, "--mix-weight", min=0.0, max=1.0, help="With --method mix: the lookup map's weight w in [0, 1]."
    ),
    threshold: Optional[float] = typer.Option(
        None,
        "--threshold",
        help="A decision threshold in [0, 1] to store "
        "in the graph's metadata (e.g. the one predict --threshold auto "
        "fitted); metauas.load and predict then decide with it.",
    ),
    shots: int = typer.Option(1, "--shots", min=1, max=MAX_SHOTS, help=SHOTS_HELP),
    lookup_encoder: str = typer.Option(LOOKUP_ENCODER, "--lookup-encoder", help=LOOKUP_ENCODER_HELP),
) -> None:
    """Export a checkpoint to ONNX or OpenVINO (opset 18, dynamic batch, metadata inside), checked against PyTorch."""
    from metauas.model.hub import fetch_first

    fetch_first(checkpoint)
    from metauas.model.export import FORMATS, OPSET, export_graphs

    _check_export_target(out, FORMATS[fmt], fmt, threshold)
    model, meta, side = _load_for_export(checkpoint, size)
    encoder, head = _method_head(model, method, LookupConfig(encoder=lookup_encoder), mix_weight)
    graphs = export_graphs(
        model, out, side, fmt, cached_prompt, threshold, meta, head=head, shots=shots, encoder=encoder
    )
    for done in graphs:
        typer.echo(
            f"wrote {done.path} ({fmt}, {method}, {shots} prompt view(s), opset {OPSET}, {side} px, "
            f"max |{fmt} - torch| {done.max_abs_diff:.1e})"
        )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `predict`, `app` and `export` to the main app, `model` to `bench`."""
    add_command(app, "predict", predict_command)
    add_command(app, "app", app_command)
    add_command(app, "export", export_command)
    add_command(bench_app, "model", bench_model_command)
