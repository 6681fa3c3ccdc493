"""`metauas import-official` (the paper authors' checkpoint as one of ours; `export` is in
inference/commands.py: a graph may compute any scoring method).

torch and timm are imported inside the command body so `metauas --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from metauas.errors import UserError
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


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `import-official` to the main app (no benchmark)."""
    add_command(app, "import-official", import_official_command)
