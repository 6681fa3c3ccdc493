"""`metauas import-official` (the paper authors' checkpoint as one of ours) and `metauas export` (ONNX, OpenVINO).

torch and timm are imported inside the command body so `metauas --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from metauas.errors import UserError
from metauas.model.config import GraphFormat
from metauas.options import add_command
from metauas.outputs import prepare_dir

DEFAULT_SIZE = 256


def import_official_command(
    ckpt: Path = typer.Argument(..., help="Official checkpoint (gaobb/MetaUAS metauas-256.ckpt or metauas-512.ckpt)."),
    out: Path = typer.Option(..., "--out", help="Our checkpoint to write (.pt), for predict/evaluate --checkpoint."),
    size: int = typer.Option(
        None,
        "--size",
        help="Size the weights were trained at, recorded as the "
        "checkpoint's default inference size (default: the number in the file "
        f"name, e.g. metauas-512.ckpt -> 512, else {DEFAULT_SIZE}).",
    ),
) -> None:
    """Convert the official MetaUAS checkpoint (paper weights) into a metauas checkpoint."""
    from metauas.model.checkpoint import save_checkpoint
    from metauas.model.official import load_official, size_from_name

    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give the checkpoint file to write, e.g. {out / 'official.pt'}")
    prepare_dir(out.parent, f"--out {out}: its folder")
    if size is not None and (size < 32 or size % 32):
        raise UserError(f"--size must be a positive multiple of 32, got {size}")
    size = size or size_from_name(ckpt) or DEFAULT_SIZE
    model = load_official(ckpt)
    extra = {
        "source": str(ckpt.resolve()),
        "official": True,
        "origin": "official MetaUAS checkpoint (gaobb/MetaUAS), converted by metauas import-official",
    }
    path = save_checkpoint(out, model, size=size, step=0, extra=extra)
    typer.echo(f"wrote {path} (official MetaUAS weights, size {size})")


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
    threshold: Optional[float] = typer.Option(
        None,
        "--threshold",
        help="A decision threshold in [0, 1] to store "
        "in the graph's metadata (e.g. the one predict --threshold auto "
        "fitted); metauas.load and predict then decide with it.",
    ),
) -> None:
    """Export a checkpoint to ONNX or OpenVINO (opset 18, dynamic batch, metadata inside), checked against PyTorch."""
    from metauas.model.hub import fetch_first, resolve_checkpoint

    fetch_first(checkpoint)
    from metauas.model.checkpoint import load_model
    from metauas.model.export import FORMATS, OPSET, export_graphs

    suffix = FORMATS[fmt]
    if out.suffix != suffix or out.is_dir():
        raise UserError(f"--out {out}: --format {fmt} writes a file name ending in {suffix}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {threshold}")
    prepare_dir(out.parent, f"--out {out}: its folder")
    model, meta = load_model(resolve_checkpoint(checkpoint))
    side = size or int(meta.get("size", 256))
    if side < 32 or side % 32:
        raise UserError(f"--size must be a positive multiple of 32, got {side}")
    for done in export_graphs(model, out, side, fmt, cached_prompt, threshold, meta):
        typer.echo(f"wrote {done.path} ({fmt}, opset {OPSET}, {side} px, max |{fmt} - torch| {done.max_abs_diff:.1e})")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `import-official` and `export` to the main app (no benchmark)."""
    add_command(app, "import-official", import_official_command)
    add_command(app, "export", export_command)
