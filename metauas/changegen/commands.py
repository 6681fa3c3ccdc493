"""`metauas generate`, `metauas preview` and `metauas bench generate|perlin`.

Only typer is imported at module level; each command imports its machinery when it
runs, so `metauas --help` stays fast and OpenCV generation never imports torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from metauas.changegen.config import GenerateConfig, ImageFormat, Inpainter, Source
from metauas.configs import parse_ints
from metauas.errors import UserError
from metauas.options import (
    ConfigCommand,
    add_command,
    config_command,
    field_option,
)

_ONE_AND_ALL_CORES = ",".join(str(n) for n in sorted({1, os.cpu_count() or 1}))


@config_command(ConfigCommand(GenerateConfig, section="config", recipes="generate"))
def generate(cfg: GenerateConfig) -> None:
    """Generate synthetic change pairs as WebDataset shards (schema changepair/1).

    `--config DIR/index.json` repeats a dataset's settings (index.json records them); `--recipe paper` sets the
    paper's data settings (docs/reproduce.md); options typed beside either override them."""
    from metauas.changegen.run import generate_dataset
    from metauas.changegen.shards import skip_report

    index = generate_dataset(cfg)
    for line in skip_report(json.loads(index.read_text())):
        typer.secho(line, err=True, fg=typer.colors.YELLOW)
    typer.echo(str(index))


def preview(
    shards: list[Path] = typer.Argument(..., help="Shard .tar files to preview, in order."),
    out: Path = typer.Option(..., "--out", help="Contact sheet image to write (.png or .jpg)."),
    n: int = typer.Option(16, "--n", help="Number of samples on the sheet (the first N)."),
) -> None:
    """Draw a contact sheet: prompt | query | mask over query, with the change type."""
    from metauas.changegen.preview import write_preview
    from metauas.data.format import ReadStats

    if n < 1:
        raise UserError("--n must be at least 1")
    stats = ReadStats()
    typer.echo(str(write_preview(shards, out, n, stats)))
    if stats.skipped:
        typer.secho(f"warning: {stats.summary()}", err=True, fg=typer.colors.YELLOW)


def bench_generate(
    sizes: str = typer.Option("256,512", "--sizes", help="Comma-separated output sides to measure."),
    workers: str = typer.Option(
        _ONE_AND_ALL_CORES, "--workers", help="Comma-separated worker counts to measure (default: 1 and every core)."
    ),
    pairs: int = typer.Option(64, "--pairs", help="Pairs per cell (split across workers); raise for steadier figures."),
    source: Source = field_option(GenerateConfig, "source"),
    images: Optional[Path] = field_option(GenerateConfig, "images"),
    coco_images: Optional[Path] = field_option(GenerateConfig, "coco_images"),
    coco_annotations: Optional[Path] = field_option(GenerateConfig, "coco_annotations"),
    inpainter: Inpainter = field_option(GenerateConfig, "inpainter"),
    lama_model: Optional[Path] = field_option(GenerateConfig, "lama_model"),
    image_format: ImageFormat = field_option(GenerateConfig, "image_format"),
) -> None:
    """Pairs/s per change type and overall, beside the I/O floor (decode+resize+encode)."""
    from metauas.changegen.bench import bench_cell_row, table_head, table_row

    typer.echo("pairs/s; floor = load source + encode the pair, no synthesis")
    typer.echo(table_head())
    for side in parse_ints(sizes, "--sizes", positive=True):
        cfg = GenerateConfig(
            out=Path("."),
            num_pairs=1,
            source=source,
            images=images,
            coco_images=coco_images,
            coco_annotations=coco_annotations,
            size=side,
            inpainter=inpainter,
            lama_model=lama_model,
            image_format=image_format,
        )
        for w in parse_ints(workers, "--workers", positive=True):
            typer.echo(table_row(bench_cell_row(cfg, w, max(pairs, w))))


def bench_perlin(
    sizes: str = typer.Option("256,512", "--sizes", help="Comma-separated mask sides to measure."),
    repeats: int = typer.Option(40, "--repeats", help="Masks per method and size (pnoise2 does 1/8 of them)."),
) -> None:
    """Milliseconds per Perlin mask: vectorised numpy vs noise.pnoise2 per pixel vs coarse grid."""
    from metauas.changegen.bench import bench_perlin as run

    typer.echo(run(parse_ints(sizes, "--sizes", positive=True), max(1, repeats)))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this part's commands to the main app and the `bench` sub-app."""
    add_command(app, "generate", generate)
    add_command(app, "preview", preview)
    add_command(bench_app, "generate", bench_generate)
    add_command(bench_app, "perlin", bench_perlin)
