"""`metauas train` and `metauas bench train`.

torch and timm are imported inside the command bodies so `metauas --help` stays fast and
works without them; option defaults come from the torch-free `TrainConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from metauas.configs import default
from metauas.devices import CHOICES as DEVICE_CHOICES
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
    typed,
    verbose_option,
)
from metauas.trainer.config import TrainConfig

AlignmentName = Literal["soft", "hard", "none", "sparsemax", "topk"]
FusionName = Literal["cat", "add", "absdiff", "cat+absdiff", "cat+cos", "cat+absdiff+cos"]
LayoutName = Literal["features", "official"]
AmpName = Literal["auto", "bf16", "fp16", "off"]

WEIGHTS_HELP = "Encoder weights: auto | offline | timm | none | path to a state dict file."
ALIGNMENT_HELP = (
    "Normaliser of the prompt lookup: soft (softmax, paper) | hard (argmax) | none | "
    "sparsemax (DictAS) | topk (softmax over the --align-topk best prompt positions)."
)
FUSION_HELP = (
    "Decoder input per deep stage: cat (query, aligned prompt; the paper's) | add | absdiff | "
    "cat+absdiff (+|query-aligned|) | cat+cos (+1-cos channel) | cat+absdiff+cos (default: "
    "best in docs/ablations.md)."
)
SCALE_HELP = (
    "Divide query-prompt similarities by sqrt(channels). Default: on for sparsemax "
    "(as DictAS), off for the others (as the paper)."
)
PROB_HELP = "Probability (0 = off) of training prompts (only) getting "

# option -> TrainConfig field, where the names differ or the field is nested
FIELDS = {
    "encoder": "model.encoder.name",
    "encoder_weights": "model.encoder.weights",
    "layout": "model.encoder.layout",
    "static_pad_size": "model.encoder.static_pad_size",
    "global_batch_size": "global_batch_size",
    "alignment": "model.alignment",
    "align_topk": "model.topk",
    "scale_similarity": "model.scale_similarity",
    "learn_temperature": "model.learn_temperature",
    "fusion": "model.fusion",
    "minutes": "max_minutes",
    "warmup": "warmup_steps",
    "dice": "dice_weight",
    "prompt_rot90": "augment.prompt_rot90",
    "prompt_rotate": "augment.prompt_rotate",
    "prompt_flip": "augment.prompt_flip",
    "prompt_dropout": "augment.prompt_dropout",
    "discrepancy_stages": "model.discrepancy_stages",
    "discrepancy_pool": "model.discrepancy_pool",
    "lookup_residual": "model.lookup_residual",
    **{
        name: name
        for name in (
            "train",
            "val",
            "out",
            "size",
            "batch_size",
            "steps",
            "epochs",
            "lr",
            "weight_decay",
            "lookup_weight",
            "cqc_margin",
            "amp",
            "compile",
            "workers",
            "shuffle_buffer",
            "resampled",
            "val_every",
            "val_pairs",
            "val_size",
            "val_seeds",
            "save_every",
            "log_every",
            "seed",
            "resume",
            "augment_on",
            "progress",
            "device",
        )
    },
}


def _d(option: str):
    """The TrainConfig default behind an option (defaults are written once, in the dataclass)."""
    return default(TrainConfig, FIELDS[option])


DISCREPANCY_HELP = (
    "Encoder stages (0 = finest; lite0 strides 2,4,8,16,32) whose prompt-query discrepancy, "
    "1 - max cosine of each query position to any prompt position (frozen features, no "
    "learning), joins the decoder as one more channel at that stage, e.g. 0,1,2,3; "
    "'none' = off. Default: ModelConfig's."
)


def train_command(
    ctx: typer.Context,
    config: Path = config_option(),
    recipe: Optional[RecipeName] = recipe_option(),
    train: str = typer.Option(
        None,
        "--train",
        help="Training shards: folder, file, brace pattern, glob, "
        "pipe: or http(s):// / s3:// URL. Required unless --config names them.",
    ),
    val: Optional[list[str]] = typer.Option(
        None,
        "--val",
        help="Validation, repeatable: held-out shards (pixel "
        "AUROC/AP on the first --val-pairs) and/or folders of real defects in "
        "MVTec layout (I-AUROC, P-AUROC, P-AP, P-AUPRO as `evaluate --method "
        "model`; best.pt then follows their P-AP).",
    ),
    out: str = typer.Option(
        None,
        "--out",
        help="Run directory: checkpoints, config.json, metrics.jsonl, "
        "TensorBoard logs. Required unless --config names it.",
    ),
    encoder: str = typer.Option(
        _d("encoder"),
        "--encoder",
        help="timm encoder name, optionally with its weights' "
        "tag (tf_efficientnet_lite0 has offline weights), or `official`: the authors' "
        "TF-ported b4 exactly as import-official builds it.",
    ),
    encoder_weights: str = typer.Option(_d("encoder_weights"), "--encoder-weights", help=WEIGHTS_HELP),
    layout: LayoutName = typer.Option(
        _d("layout"),
        "--layout",
        help="Encoder stages: features (timm features_only) | official (MetaUAS b4: stem 48@/2).",
    ),
    static_pad_size: int = typer.Option(
        _d("static_pad_size"),
        "--static-pad-size",
        help="Fix TF 'same' padding as for this input size (380: the authors' b4); 0 pads from the input.",
    ),
    alignment: AlignmentName = typer.Option(_d("alignment"), "--alignment", help=ALIGNMENT_HELP),
    align_topk: int = typer.Option(
        _d("align_topk"), "--align-topk", help="Prompt positions kept by --alignment topk (per prompt)."
    ),
    scale_similarity: Optional[bool] = typer.Option(None, "--scale-similarity/--no-scale-similarity", help=SCALE_HELP),
    learn_temperature: bool = typer.Option(
        _d("learn_temperature"),
        "--learn-temperature/--no-learn-temperature",
        help="Learn a similarity temperature per aligned stage (from 1).",
    ),
    fusion: FusionName = typer.Option(_d("fusion"), "--fusion", help=FUSION_HELP),
    size: int = typer.Option(_d("size"), "--size", help="Training input side in px (pairs are resized to it)."),
    batch_size: int = typer.Option(_d("batch_size"), "--batch-size", help="Pairs per step per process."),
    global_batch_size: int = typer.Option(
        None,
        "--global-batch-size",
        help="Pairs per step over all processes, split over WORLD_SIZE (instead of --batch-size; the paper: 128).",
    ),
    steps: int = typer.Option(None, "--steps", help="Optimiser steps in total (resumed runs count the saved ones)."),
    epochs: float = typer.Option(
        None, "--epochs", help="Passes over the training shards (instead of --steps; local shards)."
    ),
    minutes: float = typer.Option(
        None, "--minutes", help="Wall-clock budget; stops at this or --steps, whichever first."
    ),
    lr: float = typer.Option(_d("lr"), "--lr", help="AdamW peak learning rate."),
    weight_decay: float = typer.Option(_d("weight_decay"), "--weight-decay", help="AdamW weight decay."),
    warmup: int = typer.Option(_d("warmup"), "--warmup", help="Linear warmup steps before the cosine decay."),
    dice: float = typer.Option(_d("dice"), "--dice", help="Weight of a soft Dice term added to BCE (0 = BCE only)."),
    lookup_weight: float = typer.Option(
        _d("lookup_weight"),
        "--lookup-weight",
        help="Weight of DictAS's lookup losses (L_query + 0.1 L_CQC, on the change masks) added to BCE (0 = off).",
    ),
    cqc_margin: float = typer.Option(
        _d("cqc_margin"),
        "--cqc-margin",
        help="CQC hinge margin: changed positions' 1-cos lookup distance must exceed unchanged ones' by this.",
    ),
    prompt_rot90: float = typer.Option(
        _d("prompt_rot90"), "--prompt-rot90", help=PROB_HELP + "a 90/180/270 degree rotation."
    ),
    prompt_rotate: float = typer.Option(
        _d("prompt_rotate"), "--prompt-rotate", help=PROB_HELP + "a rotation by 30..270 degrees."
    ),
    prompt_flip: float = typer.Option(
        _d("prompt_flip"), "--prompt-flip", help=PROB_HELP + "a horizontal or vertical flip."
    ),
    prompt_dropout: float = typer.Option(
        _d("prompt_dropout"), "--prompt-dropout", help=PROB_HELP + "1-4 mean-filled rectangles."
    ),
    amp: AmpName = typer.Option(
        _d("amp"),
        "--amp",
        help="Mixed precision on CUDA: auto (bf16, else fp16) | bf16 | fp16 | off. The CPU trains in fp32.",
    ),
    compile: bool = typer.Option(_d("compile"), "--compile/--no-compile", help="torch.compile the model."),
    workers: int = typer.Option(_d("workers"), "--workers", help="Data loader processes per training process."),
    augment_on: Literal["auto", "workers", "device"] = typer.Option(
        _d("augment_on"),
        "--augment-on",
        help="Where warps and colour jitter run: workers (OpenCV, per pair) | "
        "device (batched on the training device; workers only decode) | auto (device on CUDA).",
    ),
    shuffle_buffer: int = typer.Option(_d("shuffle_buffer"), "--shuffle-buffer", help="Samples held for shuffling."),
    resampled: bool = typer.Option(
        _d("resampled"), "--resampled/--no-resampled", help="Draw shards with replacement (always on with >1 process)."
    ),
    val_every: int = typer.Option(
        _d("val_every"), "--val-every", help="Validate every N steps (and at the start and end)."
    ),
    val_pairs: int = typer.Option(_d("val_pairs"), "--val-pairs", help="Validation pairs used (the first N of --val)."),
    val_size: int = typer.Option(
        _d("val_size"), "--val-size", help="Scoring size (px) of --val folders of real defects (the protocol's 256)."
    ),
    val_seeds: str = typer.Option(
        ",".join(map(str, _d("val_seeds"))),
        "--val-seeds",
        help="Prompt seeds of --val folders: one random normal prompt per class and seed (more: steadier, slower).",
    ),
    save_every: int = typer.Option(
        _d("save_every"), "--save-every", help="Save the resumable checkpoint every N steps."
    ),
    log_every: int = typer.Option(_d("log_every"), "--log-every", help="Write a metrics row every N steps."),
    seed: int = typer.Option(_d("seed"), "--seed", help="Seed for initialisation, shard order and augmentation."),
    resume: bool = typer.Option(
        _d("resume"), "--resume", help="Continue OUT/last.pt (model, optimiser, schedule, step, RNG)."
    ),
    discrepancy_stages: Optional[str] = typer.Option(None, "--discrepancy-stages", help=DISCREPANCY_HELP),
    discrepancy_pool: int = typer.Option(
        _d("discrepancy_pool"),
        "--discrepancy-pool",
        help="k x k average pooling (odd k) of the features before the discrepancy's cosine; 1 = none.",
    ),
    lookup_residual: float = typer.Option(
        _d("lookup_residual"),
        "--lookup-residual",
        help="Initial gain g of a "
        "learned residual: logits += g * (mean discrepancy map, upsampled); the "
        "model starts from the lookup's ranking. 0 = off. Needs "
        "--discrepancy-stages.",
    ),
    device: str = typer.Option(_d("device"), "--device", help=f"{DEVICE_CHOICES} (under torchrun: auto or cuda)."),
    progress: bool = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Train MetaUAS on change-pair shards (also under `torchrun --nproc-per-node K`).

    `--config RUN/config.json` repeats a run's settings (every run writes one);
    `--recipe paper` sets the paper's (docs/reproduce.md); options typed beside either
    override them."""
    from metauas.recipes import recipe as recipe_settings
    from metauas.trainer.train import train as run_training

    values = dict(locals())
    values["progress"] = setup_output(quiet, verbose, progress)
    values["val"] = (val[0] if len(val) == 1 else tuple(val)) if val else None
    values["val_seeds"] = parse_ints(val_seeds, "--val-seeds")
    if discrepancy_stages is not None:
        values["discrepancy_stages"] = parse_ints(discrepancy_stages, "--discrepancy-stages", allow_none=True)
    also = set()
    if scale_similarity is None:  # DictAS scales sparsemax's similarities; the paper doesn't
        values["scale_similarity"] = alignment == "sparsemax"
        also = {"scale_similarity"} if "alignment" in typed(ctx) else set()
    also |= _expand_encoder(ctx, values) | _batch_choice(ctx, values)
    if config is None and (train is None or out is None):
        raise UserError("give --train SHARDS and --out DIR (or --config RUN/config.json)")
    cfg = build_config(
        TrainConfig, ctx, values, FIELDS, config, also_typed=also, recipe=recipe_settings(recipe, "train")
    )
    if config is not None:
        no_commands_from(config, cfg, typed(ctx))
    path = run_training(cfg)
    typer.echo(f"checkpoint: {path}")


def no_commands_from(config: Path, cfg: TrainConfig, given: set[str]) -> None:
    """A `pipe:` shard URL runs a shell command. A config file is easily shared (a run's
    config.json, a colleague's recipe), so the commands it holds run only when the user
    types them: `--train 'pipe:...'` (or `--val`) on the command line is the explicit
    choice; one from the file alone is refused in one line (docs/usage.md)."""
    from metauas.data.format import pipe_commands

    for option, value in (("train", cfg.train), ("val", cfg.val)):
        commands = pipe_commands(value) if value and option not in given else []
        if commands:
            raise UserError(
                f"--config {config}: its {option} shards run a shell command ({commands[0][:80]!r}); a config "
                f"file may not run commands: check it, then type --{option} with those shards yourself to run it"
            )


def _expand_encoder(ctx: typer.Context, values: dict) -> set[str]:
    """`--encoder official` stands for name, layout and padding size (model/config.py's
    ENCODER_ALIASES); a layout or padding typed beside it still wins. Returns the
    parameters it set, which override a config file or recipe like typed ones."""
    from metauas.model.config import ENCODER_ALIASES

    alias = ENCODER_ALIASES.get(values["encoder"]) if "encoder" in typed(ctx) else None
    if alias is None:
        return set()
    params = {"name": "encoder", "layout": "layout", "static_pad_size": "static_pad_size"}
    chosen = {params[f] for f in alias if params[f] == "encoder" or params[f] not in typed(ctx)}
    values.update({params[f]: v for f, v in alias.items() if params[f] in chosen})
    return chosen


def _batch_choice(ctx: typer.Context, values: dict) -> set[str]:
    """A typed per-process --batch-size replaces a global batch from --recipe or --config."""
    given = typed(ctx)
    if {"batch_size", "global_batch_size"} <= given:
        raise UserError("give --batch-size (per process) or --global-batch-size (over all processes), not both")
    if "batch_size" in given:
        values["global_batch_size"] = None
        return {"global_batch_size"}
    return set()


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
    app.command("train")(train_command)
    bench_app.command("train")(bench_train_command)
