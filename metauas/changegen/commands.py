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

from metauas.changegen.config import (
    DEFAULT_WEIGHTS,
    BuiltinSplit,
    CocoSplit,
    GenerateConfig,
    ImageFormat,
    Inpainter,
    PerlinName,
    Source,
    StartMethod,
)
from metauas.configs import default
from metauas.errors import UserError
from metauas.options import (
    RecipeName,
    build_config,
    config_option,
    parse_ints,
    progress_option,
    quiet_option,
    recipe_option,
    setup_output,
    verbose_option,
)

# Options shared by `generate` and `bench generate` (one definition, one help text).
_SOURCE = typer.Option(
    default(GenerateConfig, "source"),
    "--source",
    help="Where images come from: builtin (embedded, offline) | coco (instances JSON) | folder (any images).",
)
_IMAGES = typer.Option(None, "--images", help="Folder of images (with --source folder); searched recursively.")
_COCO_IMAGES = typer.Option(None, "--coco-images", help="COCO images folder (with --source coco).")
_COCO_ANNOTATIONS = typer.Option(None, "--coco-annotations", help="COCO instances JSON (with --source coco).")
_INPAINTER = typer.Option(
    default(GenerateConfig, "inpainter"),
    "--inpainter",
    help="Inpainting backend: opencv (Telea) | opencv-ns | patchmatch (optional package) | lama (--lama-model).",
)
_LAMA_MODEL = typer.Option(
    None, "--lama-model", help="big-lama TorchScript file for --inpainter lama (or set LAMA_MODEL)."
)


_ONE_AND_ALL_CORES = ",".join(str(n) for n in sorted({1, os.cpu_count() or 1}))


def _d(field: str):
    return default(GenerateConfig, field)


# generate's options that are GenerateConfig fields under another name
FIELDS = {
    "jpeg_quality": "jpeg_quality",
    **{
        name: name
        for name in (
            "out",
            "num_pairs",
            "source",
            "images",
            "coco_images",
            "coco_annotations",
            "coco_max_images",
            "coco_split",
            "coco_val_fraction",
            "builtin_split",
            "size",
            "shard_size",
            "prefix",
            "image_format",
            "workers",
            "seed",
            "inpainter",
            "lama_model",
            "change_weights",
            "shards",
            "min_side",
            "min_area",
            "max_area",
            "max_exchange",
            "perlin",
            "start_method",
            "progress",
            "max_pixels",
            "local_masks",
            "local_intensity",
        )
    },
}


def generate(
    ctx: typer.Context,
    config: Optional[Path] = config_option(),
    recipe: Optional[RecipeName] = recipe_option(),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder for the shards and index.json (created if missing). Required."
    ),
    num_pairs: Optional[int] = typer.Option(
        None, "--num-pairs", help="Number of change pairs in the dataset. Required unless --config gives it."
    ),
    source: Source = _SOURCE,
    images: Optional[Path] = _IMAGES,
    coco_images: Optional[Path] = _COCO_IMAGES,
    coco_annotations: Optional[Path] = _COCO_ANNOTATIONS,
    coco_max_images: Optional[int] = typer.Option(
        None, "--coco-max-images", help="Use only this many COCO images (a fixed shuffle of the ids; the paper: 60000)."
    ),
    coco_split: CocoSplit = typer.Option(
        _d("coco_split"), "--coco-split", help="Which part of those images: all | train | val."
    ),
    coco_val_fraction: float = typer.Option(
        _d("coco_val_fraction"),
        "--coco-val-fraction",
        help="Share of the images that form --coco-split val (the paper: 0.05).",
    ),
    builtin_split: BuiltinSplit = typer.Option(
        _d("builtin_split"),
        "--builtin-split",
        help="Builtin photos and scenes: train | heldout | all (disjoint train/heldout; see docs/usage.md).",
    ),
    size: int = typer.Option(
        _d("size"), "--size", help="Output side in px: shorter side scaled to SIZE, centre square cropped."
    ),
    shard_size: int = typer.Option(_d("shard_size"), "--shard-size", help="Samples per shard."),
    prefix: str = typer.Option(_d("prefix"), "--prefix", help="Shard names are PREFIX-NNNNNN.tar."),
    image_format: ImageFormat = typer.Option(
        _d("image_format"), "--image-format", help="Prompt/query encoding (masks are always png)."
    ),
    jpeg_quality: int = typer.Option(_d("jpeg_quality"), "--quality", help="Quality of jpg/webp encoding (1-100)."),
    workers: int = typer.Option(_d("workers"), "--workers", help="Worker processes; never changes the bytes written."),
    seed: int = typer.Option(_d("seed"), "--seed", help="Dataset seed; sample i uses an RNG seeded by (seed, i)."),
    inpainter: Inpainter = _INPAINTER,
    lama_model: Optional[Path] = _LAMA_MODEL,
    change_weights: Optional[str] = typer.Option(
        None,
        "--change-weights",
        help="e.g. disappear=1,appear=1,"
        "exchange=1,local=1,none=0.5; unnamed types get 0. Default "
        + ",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS.items())
        + ".",
    ),
    shards: Optional[str] = typer.Option(
        None, "--shards", help="Make only shard ids A:B (B exclusive); combine with RANK/WORLD_SIZE."
    ),
    min_side: int = typer.Option(
        _d("min_side"), "--min-side", help="Skip source images whose shorter side is below this (counted as too_small)."
    ),
    max_pixels: int = typer.Option(
        _d("max_pixels"),
        "--max-pixels",
        help="Skip source images with more pixels "
        "than this, read from the file's header before decoding (counted as too_large).",
    ),
    min_area: float = typer.Option(
        _d("min_area"), "--min-area", help="Smallest instance kept, as a fraction of the output image."
    ),
    max_area: float = typer.Option(
        _d("max_area"), "--max-area", help="Largest instance kept, as a fraction of the output image."
    ),
    max_exchange: int = typer.Option(_d("max_exchange"), "--max-exchange", help="exchange pastes 1..N instances."),
    perlin: PerlinName = typer.Option(
        _d("perlin"),
        "--perlin",
        help="Perlin noise of local "
        "masks: numpy (DRAEM's recipe, vectorised) | noise (the noise "
        "package's pnoise2, ~50x slower).",
    ),
    local_masks: Optional[str] = typer.Option(
        None,
        "--local-masks",
        help="Mask kinds of the local change with "
        "weights, e.g. perlin=1,blob=1,stroke=1,stain=0.5: perlin (DRAEM's "
        "Perlin regions, the paper's; the default alone) | blob (one pit or "
        "blowhole, 3-12% of the side across) | stroke (a scratch or crack "
        "polyline, 0.8-3.5% of the side wide) | stain (fine Perlin noise "
        "inside one small ellipse).",
    ),
    local_intensity: float = typer.Option(
        _d("local_intensity"),
        "--local-intensity",
        help="Probability that a "
        "blob/stroke/stain is a darker or brighter spot instead of DRAEM's fill "
        "from another image or texture.",
    ),
    start_method: Optional[StartMethod] = typer.Option(
        None, "--start-method", help="multiprocessing start method (default: spawn)."
    ),
    progress: bool = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Generate synthetic change pairs as WebDataset shards (schema changepair/1).

    `--config DIR/index.json` repeats a dataset's settings (index.json records them); `--recipe paper` sets the
    paper's data settings (docs/reproduce.md); options typed beside either override them."""
    from metauas.changegen.config import parse_change_weights, parse_local_masks
    from metauas.changegen.run import generate_dataset
    from metauas.changegen.shards import skip_report
    from metauas.recipes import recipe as recipe_settings

    values = dict(locals())
    values["progress"] = setup_output(quiet, verbose, progress)
    values["change_weights"] = parse_change_weights(change_weights) if change_weights else None
    values["local_masks"] = parse_local_masks(local_masks) if local_masks else None
    if out is None or (config is None and num_pairs is None):
        raise UserError("give --out DIR and --num-pairs N (or --config DIR/index.json with --out)")
    cfg = build_config(
        GenerateConfig, ctx, values, FIELDS, config, section="config", recipe=recipe_settings(recipe, "generate")
    )
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
    source: Source = _SOURCE,
    images: Optional[Path] = _IMAGES,
    coco_images: Optional[Path] = _COCO_IMAGES,
    coco_annotations: Optional[Path] = _COCO_ANNOTATIONS,
    inpainter: Inpainter = _INPAINTER,
    lama_model: Optional[Path] = _LAMA_MODEL,
    image_format: ImageFormat = typer.Option("jpg", "--image-format", help="Encoding measured."),
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
    app.command("generate")(generate)
    app.command("preview")(preview)
    bench_app.command("generate")(bench_generate)
    bench_app.command("perlin")(bench_perlin)
