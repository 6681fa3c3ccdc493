"""`metauas train` and `metauas bench train`.

torch and timm are imported inside the command bodies so `metauas --help` stays fast and
works without them; train's options are made from the torch-free `TrainConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from metauas.configs import parse_ints
from metauas.devices import CHOICES as DEVICE_CHOICES
from metauas.errors import UserError
from metauas.options import ConfigCommand, add_command, config_command
from metauas.trainer.config import TrainConfig


def _train_rules(values: dict[str, Any], typed: set[str], config: Path | None) -> set[str]:
    """train's own option rules; returns the options they set (which override like typed ones)."""
    if config is not None:
        no_commands_from(config, typed)
    derived = set()
    if values["scale_similarity"] is None:  # DictAS scales sparsemax's similarities; the paper doesn't
        values["scale_similarity"] = values["alignment"] == "sparsemax"
        derived = {"scale_similarity"} if "alignment" in typed else set()
    return derived | _expand_encoder(values, typed) | _batch_choice(values, typed)


def no_commands_from(config: Path, typed: set[str]) -> None:
    """A `pipe:` shard URL runs a shell command. A config file is easily shared (a run's
    config.json, a colleague's recipe), so the commands it holds run only when the user
    types them: `--train 'pipe:...'` (or `--val`) on the command line is the explicit
    choice; one from the file alone is refused in one line (docs/usage.md)."""
    from metauas.configs import read_json
    from metauas.data.format import pipe_commands

    data = read_json(config, "--config")
    for option in ("train", "val"):
        value = data.get(option) if option not in typed else None
        shards = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        commands = pipe_commands([s for s in shards if isinstance(s, str)])  # other types: TrainConfig refuses
        if commands:
            raise UserError(
                f"--config {config}: its {option} shards run a shell command ({commands[0][:80]!r}); a config "
                f"file may not run commands: check it, then type --{option} with those shards yourself to run it"
            )


def _expand_encoder(values: dict[str, Any], typed: set[str]) -> set[str]:
    """`--encoder official` stands for name, layout and padding size (model/config.py's
    ENCODER_ALIASES); a layout or padding typed beside it still wins. Returns the
    parameters it set, which override a config file or recipe like typed ones."""
    from metauas.model.config import ENCODER_ALIASES

    alias = ENCODER_ALIASES.get(values["encoder"]) if "encoder" in typed else None
    if alias is None:
        return set()
    params = {"name": "encoder", "layout": "layout", "static_pad_size": "static_pad_size"}
    chosen = {params[f] for f in alias if params[f] == "encoder" or params[f] not in typed}
    values.update({params[f]: v for f, v in alias.items() if params[f] in chosen})
    return chosen


def _batch_choice(values: dict[str, Any], typed: set[str]) -> set[str]:
    """A typed per-process --batch-size replaces a global batch from --recipe or --config."""
    if {"batch_size", "global_batch_size"} <= typed:
        raise UserError("give --batch-size (per process) or --global-batch-size (over all processes), not both")
    if "batch_size" in typed:
        values["global_batch_size"] = None
        return {"global_batch_size"}
    return set()


@config_command(ConfigCommand(TrainConfig, recipes="train", prepare=_train_rules))
def train_command(cfg: TrainConfig) -> None:
    """Train MetaUAS on change-pair shards (also under `torchrun --nproc-per-node K`).

    `--config RUN/config.json` repeats a run's settings (every run writes one);
    `--recipe paper` sets the paper's (docs/reproduce.md); options typed beside either
    override them."""
    from metauas.trainer.train import train

    checkpoint = train(cfg)
    typer.echo(f"checkpoint: {checkpoint}")


def bench_train_command(
    shards: str = typer.Option(
        None, "--shards", help="Shards to read (default: --pairs builtin pairs generated to a temp dir at --size)."
    ),
    size: int = typer.Option(256, "--size", help="Training input side in px."),
    batch_size: int = typer.Option(16, "--batch-size", help="Pairs per batch."),
    workers: int = typer.Option(1, "--workers", help="Loader worker processes (figures are per worker = per core)."),
    batches: int = typer.Option(8, "--batches", help="Loader batches timed per stretch (two stretches)."),
    pairs: int = typer.Option(128, "--pairs", help="Pairs held in memory for the per-stage timings."),
    steps: int = typer.Option(0, "--steps", help="Training steps timed on --device (0: skip; slow on a CPU)."),
    device: str = typer.Option(
        "auto", "--device", help=f"Where the device-side augmentation (and --steps) run: {DEVICE_CHOICES}."
    ),
    gpu_pairs_s: float = typer.Option(
        2000.0,
        "--gpu-pairs-s",
        help="Training pairs/s one GPU consumes, for the "
        "GPUs-per-node table (a stated rate: benchmarks/gpu_check.sh measures it).",
    ),
    cores: str = typer.Option("8,16,32,64", "--cores", help="Loader core counts per node for that table."),
) -> None:
    """Data path per pair (decode, augment, collate, to device), loader pairs/s per core vs
    the decode floor, and how many GPUs a node's cores can feed."""
    from metauas.devices import resolve_device
    from metauas.trainer.bench import TrainBenchConfig, bench_train, bench_train_builtin, report

    counts = parse_ints(cores, "--cores")
    if min([size - 31, batch_size, workers, batches, pairs - batch_size + 1, gpu_pairs_s, *counts]) <= 0:
        raise UserError("bench train: --size >= 32, --pairs >= --batch-size, and positive counts and rates")
    cfg = TrainBenchConfig(
        size=size,
        batch_size=batch_size,
        workers=workers,
        batches=batches,
        pairs=pairs,
        steps=steps,
        device=str(resolve_device(device)),
    )
    r = bench_train(shards, cfg) if shards else bench_train_builtin(max(pairs, 4 * batch_size), cfg)
    typer.echo(f"size {size}, batch {batch_size}, {workers} loader worker(s), device {r.device}")
    for line in report(r, gpu_pairs_s, counts):
        typer.echo(line)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `train` to the main app, `train` to `bench`."""
    add_command(app, "train", train_command)
    add_command(bench_app, "train", bench_train_command)
