"""`metauas generate`, `metauas preview` and `metauas bench generate|perlin`.

Only typer is imported at module level; each command imports its machinery when it
runs, so `metauas --help` stays fast and OpenCV generation never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from metauas.errors import UserError

# Options shared by `generate` and `bench generate` (one definition, one help text).
_SOURCE = typer.Option("builtin", "--source", help="Where images come from: builtin | coco | folder.")
_IMAGES = typer.Option(None, "--images", help="Folder of images (with --source folder); searched recursively.")
_COCO_IMAGES = typer.Option(None, "--coco-images", help="COCO images folder (with --source coco).")
_COCO_ANNOTATIONS = typer.Option(None, "--coco-annotations", help="COCO instances JSON (with --source coco).")
_INPAINTER = typer.Option("opencv", "--inpainter", help="Inpainting backend: opencv (Telea) | opencv-ns | patchmatch (optional package) | lama.")
_LAMA_MODEL = typer.Option(None, "--lama-model", help="big-lama TorchScript file for --inpainter lama (or set LAMA_MODEL).")


_ONE_AND_ALL_CORES = ",".join(str(n) for n in sorted({1, os.cpu_count() or 1}))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} wants comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} wants positive integers, got {text!r}")
    return values


def generate(
    out: Path = typer.Option(..., "--out", help="Output folder for the shards and index.json (created if missing)."),
    num_pairs: int = typer.Option(..., "--num-pairs", help="Number of change pairs in the dataset."),
    source: str = _SOURCE,
    images: Optional[Path] = _IMAGES,
    coco_images: Optional[Path] = _COCO_IMAGES,
    coco_annotations: Optional[Path] = _COCO_ANNOTATIONS,
    builtin_split: str = typer.Option("all", "--builtin-split", help="Builtin photos and scenes: train | heldout | all (disjoint train/heldout; see docs/usage.md)."),
    size: int = typer.Option(256, "--size", help="Output side in px: shorter side scaled to SIZE, centre square cropped."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Samples per shard."),
    prefix: str = typer.Option("shard", "--prefix", help="Shard names are PREFIX-NNNNNN.tar."),
    image_format: str = typer.Option("jpg", "--image-format", help="Prompt/query encoding: jpg | png | webp (masks are always png)."),
    jpeg_quality: int = typer.Option(95, "--quality", help="Quality of jpg/webp encoding (1-100)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes; never changes the bytes written."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; sample i uses an RNG seeded by (seed, i)."),
    inpainter: str = _INPAINTER,
    lama_model: Optional[Path] = _LAMA_MODEL,
    change_weights: Optional[str] = typer.Option(None, "--change-weights", help="e.g. disappear=1,appear=1,exchange=1,local=1,none=0.5; unnamed types get 0. Default 0.25,0.25,0.2,0.2,0.1."),
    shards: Optional[str] = typer.Option(None, "--shards", help="Make only shard ids A:B (B exclusive); combine with RANK/WORLD_SIZE."),
    min_side: int = typer.Option(64, "--min-side", help="Skip source images whose shorter side is below this (counted as too_small)."),
    min_area: float = typer.Option(0.01, "--min-area", help="Smallest instance kept, as a fraction of the output image."),
    max_area: float = typer.Option(0.35, "--max-area", help="Largest instance kept, as a fraction of the output image."),
    max_exchange: int = typer.Option(3, "--max-exchange", help="exchange pastes 1..N instances."),
    local_masks: Optional[str] = typer.Option(None, "--local-masks", help="Mask kinds of the local change with weights, e.g. perlin=1,blob=1,stroke=1,stain=0.5: perlin (DRAEM's Perlin regions, the paper's; the default alone) | blob (one pit/blowhole, 3-12% of the side across) | stroke (a scratch/crack polyline, 0.8-3.5% of the side wide) | stain (fine Perlin noise inside one small ellipse)."),
    local_intensity: float = typer.Option(0.5, "--local-intensity", help="Probability that a blob/stroke/stain is a darker or brighter spot instead of DRAEM's fill from another image or texture."),
    start_method: Optional[str] = typer.Option(None, "--start-method", help="multiprocessing start method: spawn (default) | fork | forkserver."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with pairs/s and ETA on stderr."),
) -> None:
    """Generate synthetic change pairs as WebDataset shards (schema changepair/1)."""
    from metauas.changegen.config import DEFAULT_LOCAL_MASKS, DEFAULT_WEIGHTS, GenerateConfig, parse_change_weights, parse_local_masks
    from metauas.changegen.run import generate_dataset

    cfg = GenerateConfig(
        out=out, num_pairs=num_pairs, source=source, images=images, coco_images=coco_images,
        coco_annotations=coco_annotations, builtin_split=builtin_split, size=size, shard_size=shard_size,
        prefix=prefix, image_format=image_format, jpeg_quality=jpeg_quality, seed=seed, inpainter=inpainter,
        lama_model=lama_model, change_weights=parse_change_weights(change_weights) if change_weights else dict(DEFAULT_WEIGHTS),
        min_side=min_side, min_area=min_area, max_area=max_area, max_exchange=max_exchange,
        workers=workers, shards=shards, progress=progress, start_method=start_method,
        local_masks=parse_local_masks(local_masks) if local_masks else dict(DEFAULT_LOCAL_MASKS),
        local_intensity=local_intensity,
    )
    index = generate_dataset(cfg)
    typer.echo(str(index))


def preview(
    shards: list[Path] = typer.Argument(..., help="Shard .tar files to preview, in order."),
    out: Path = typer.Option(..., "--out", help="Contact sheet image to write (.png or .jpg)."),
    n: int = typer.Option(16, "--n", help="Number of samples on the sheet (the first N)."),
) -> None:
    """Draw a contact sheet: prompt | query | mask over query, with the change type."""
    from metauas.changegen.format import ReadStats
    from metauas.changegen.preview import write_preview

    if n < 1:
        raise UserError("--n must be at least 1")
    stats = ReadStats()
    typer.echo(str(write_preview(shards, out, n, stats)))
    if stats.skipped:
        typer.secho(f"warning: {stats.summary()}", err=True, fg=typer.colors.YELLOW)


def bench_generate(
    sizes: str = typer.Option("256,512", "--sizes", help="Comma-separated output sides to measure."),
    workers: str = typer.Option(_ONE_AND_ALL_CORES, "--workers", help="Comma-separated worker counts to measure (default: 1 and every core)."),
    pairs: int = typer.Option(64, "--pairs", help="Pairs per cell (split across workers); raise for steadier figures."),
    source: str = _SOURCE,
    images: Optional[Path] = _IMAGES,
    coco_images: Optional[Path] = _COCO_IMAGES,
    coco_annotations: Optional[Path] = _COCO_ANNOTATIONS,
    inpainter: str = _INPAINTER,
    lama_model: Optional[Path] = _LAMA_MODEL,
    image_format: str = typer.Option("jpg", "--image-format", help="Encoding measured: jpg | png | webp."),
) -> None:
    """Pairs/s per change type and overall, beside the I/O floor (decode+resize+encode)."""
    from metauas.changegen.bench import bench_cell_row, table_head, table_row
    from metauas.changegen.config import GenerateConfig

    typer.echo("pairs/s; floor = load source + encode the pair, no synthesis")
    typer.echo(table_head())
    for side in _int_list(sizes, "--sizes"):
        cfg = GenerateConfig(
            out=Path("."), num_pairs=1, source=source, images=images, coco_images=coco_images,
            coco_annotations=coco_annotations, size=side, inpainter=inpainter, lama_model=lama_model,
            image_format=image_format,
        )
        cfg.validate()
        for w in _int_list(workers, "--workers"):
            typer.echo(table_row(bench_cell_row(cfg, w, max(pairs, w))))


def bench_perlin(
    sizes: str = typer.Option("256,512", "--sizes", help="Comma-separated mask sides to measure."),
    repeats: int = typer.Option(40, "--repeats", help="Masks per method and size (pnoise2 does 1/8 of them)."),
) -> None:
    """Milliseconds per Perlin mask: vectorised numpy vs noise.pnoise2 per pixel vs coarse grid."""
    from metauas.changegen.bench import bench_perlin as run

    typer.echo(run(_int_list(sizes, "--sizes"), max(1, repeats)))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this part's commands to the main app and the `bench` sub-app."""
    app.command("generate")(generate)
    app.command("preview")(preview)
    bench_app.command("generate")(bench_generate)
    bench_app.command("perlin")(bench_perlin)
