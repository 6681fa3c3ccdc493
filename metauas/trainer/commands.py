"""`metauas train` and `metauas bench train`.

torch and timm are imported inside the command bodies so `metauas --help` stays fast.
"""

from __future__ import annotations

import typer

ENCODER_HELP = "timm encoder name (tf_efficientnet_lite0 has offline weights; the paper uses efficientnet_b4)."
WEIGHTS_HELP = "Encoder weights: auto | offline | timm | none | path to a state dict file."
LAYOUT_HELP = "Encoder stages: features (timm features_only) | official (MetaUAS b4: stem 48@/2)."
ALIGNMENT_HELP = ("Normaliser of the prompt lookup: soft (softmax, paper) | hard (argmax) | none | "
                  "sparsemax (DictAS) | topk (softmax over the --topk best prompt positions).")
FUSION_HELP = ("Decoder input per deep stage: cat (query, aligned prompt; the paper's) | add | absdiff | "
               "cat+absdiff (+|query-aligned|) | cat+cos (+1-cos channel) | cat+absdiff+cos (default: "
               "best in docs/ablations.md).")
SCALE_HELP = ("Divide query-prompt similarities by sqrt(channels). Default: on for sparsemax "
              "(as DictAS), off for the others (as the paper).")
PROB_HELP = "Probability (0 = off) of training prompts (only) getting "


def _model_config(encoder: str, encoder_weights: str, layout: str, alignment: str, fusion: str,
                  topk: int, scale_similarity: bool | None, learn_temperature: bool):
    from metauas.model.encoder import EncoderConfig
    from metauas.model.network import ModelConfig

    if scale_similarity is None:  # DictAS scales sparsemax's similarities; the paper doesn't
        scale_similarity = alignment == "sparsemax"
    return ModelConfig(encoder=EncoderConfig(encoder, encoder_weights, layout), alignment=alignment,
                       fusion=fusion, topk=topk, scale_similarity=scale_similarity,
                       learn_temperature=learn_temperature)


DISCREPANCY_HELP = ("Encoder stages (0 = finest; lite0 strides 2,4,8,16,32) whose prompt-query discrepancy, "
                    "1 - max cosine of each query position to any prompt position (frozen features, no "
                    "learning), joins the decoder as one more channel at that stage, e.g. 1,2,3; "
                    "'none' = off. Default: ModelConfig's.")


def _with_discrepancy(model, stages: str | None, pool: int | None, residual: float | None):
    """`model` with the discrepancy options that were given (None keeps ModelConfig's default)."""
    import dataclasses

    from metauas.errors import UserError

    changes: dict = {}
    if stages is not None:
        text = stages.replace(" ", "")
        try:
            changes["discrepancy_stages"] = () if text in ("", "none") else tuple(int(v) for v in text.split(","))
        except ValueError:
            raise UserError(f"--discrepancy-stages takes comma-separated stages 0..4 or none, got {stages!r}") from None
    if pool is not None:
        changes["discrepancy_pool"] = pool
    if residual is not None:
        changes["lookup_residual"] = residual
    return dataclasses.replace(model, **changes) if changes else model


def _augment_config(prompt_rot90: float, prompt_rotate: float, prompt_flip: float, prompt_dropout: float):
    from metauas.trainer.augment import AugmentConfig

    return AugmentConfig(prompt_rot90=prompt_rot90, prompt_rotate=prompt_rotate,
                         prompt_flip=prompt_flip, prompt_dropout=prompt_dropout)


def train_command(
    train: str = typer.Option(..., "--train", help="Training shards: folder, file, brace pattern, glob or pipe: URL."),
    val: str = typer.Option(None, "--val", help="Held-out shards for validation (P-AUROC, P-AP)."),
    out: str = typer.Option(..., "--out", help="Run directory: checkpoints, metrics.jsonl, TensorBoard logs."),
    encoder: str = typer.Option("tf_efficientnet_lite0", "--encoder", help=ENCODER_HELP),
    encoder_weights: str = typer.Option("auto", "--encoder-weights", help=WEIGHTS_HELP),
    layout: str = typer.Option("features", "--layout", help=LAYOUT_HELP),
    alignment: str = typer.Option("soft", "--alignment", help=ALIGNMENT_HELP),
    topk: int = typer.Option(8, "--topk", help="Prompt positions kept by --alignment topk (per prompt)."),
    scale_similarity: bool | None = typer.Option(None, "--scale-similarity/--no-scale-similarity", help=SCALE_HELP),
    learn_temperature: bool = typer.Option(False, "--learn-temperature/--no-learn-temperature",
                                           help="Learn a similarity temperature per aligned stage (from 1)."),
    fusion: str = typer.Option("cat+absdiff+cos", "--fusion", help=FUSION_HELP),
    size: int = typer.Option(256, "--size", help="Training input side in px (pairs are resized to it)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per step per process."),
    steps: int = typer.Option(None, "--steps", help="Optimiser steps in total (resumed runs count the saved ones)."),
    epochs: float = typer.Option(None, "--epochs", help="Passes over the training shards (instead of --steps; local shards)."),
    minutes: float = typer.Option(None, "--minutes", help="Wall-clock budget; stops at this or --steps, whichever first."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW peak learning rate."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="AdamW weight decay."),
    warmup: int = typer.Option(100, "--warmup", help="Linear warmup steps before the cosine decay."),
    dice: float = typer.Option(0.0, "--dice", help="Weight of a soft Dice term added to BCE (0 = BCE only)."),
    lookup_weight: float = typer.Option(0.0, "--lookup-weight", help="Weight of DictAS's lookup losses "
                                        "(L_query + 0.1 L_CQC, on the change masks) added to BCE (0 = off)."),
    cqc_margin: float = typer.Option(0.1, "--cqc-margin", help="CQC hinge margin: changed positions' "
                                     "1-cos lookup distance must exceed unchanged ones' by this."),
    prompt_rot90: float = typer.Option(0.0, "--prompt-rot90", help=PROB_HELP + "a 90/180/270 degree rotation."),
    prompt_rotate: float = typer.Option(0.0, "--prompt-rotate", help=PROB_HELP + "a rotation by 30..270 degrees."),
    prompt_flip: float = typer.Option(0.0, "--prompt-flip", help=PROB_HELP + "a horizontal or vertical flip."),
    prompt_dropout: float = typer.Option(0.0, "--prompt-dropout", help=PROB_HELP + "1-4 mean-filled rectangles."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision on CUDA: auto | bf16 | fp16 | off (CPU: off)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model."),
    workers: int = typer.Option(2, "--workers", help="Data loader processes per training process."),
    shuffle_buffer: int = typer.Option(1000, "--shuffle-buffer", help="Samples held for shuffling."),
    resampled: bool = typer.Option(False, "--resampled/--no-resampled", help="Draw shards with replacement (always on with >1 process)."),
    val_every: int = typer.Option(500, "--val-every", help="Validate every N steps (and at the start and end)."),
    val_pairs: int = typer.Option(256, "--val-pairs", help="Validation pairs used (the first N of --val)."),
    save_every: int = typer.Option(500, "--save-every", help="Save the resumable checkpoint every N steps."),
    log_every: int = typer.Option(10, "--log-every", help="Write a metrics row every N steps."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, shard order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/last.pt (model, optimiser, schedule, step, RNG)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    discrepancy_stages: str = typer.Option(None, "--discrepancy-stages", help=DISCREPANCY_HELP),
    discrepancy_pool: int = typer.Option(None, "--discrepancy-pool", help="k x k average pooling (odd k) of the "
                                         "features before the discrepancy's cosine; 1 = none. Default: ModelConfig's."),
    lookup_residual: float = typer.Option(None, "--lookup-residual", help="Initial gain g of a learned residual: "
                                          "logits += g * (mean discrepancy map, upsampled); the model starts from the "
                                          "lookup's ranking. 0 = off. Needs --discrepancy-stages. Default: ModelConfig's."),
) -> None:
    """Train MetaUAS on change-pair shards (also under `torchrun --nproc-per-node K`)."""
    import logging

    from metauas.trainer.train import TrainConfig
    from metauas.trainer.train import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(
        train=train, val=val, out=out, size=size, batch_size=batch_size, steps=steps, epochs=epochs,
        max_minutes=minutes, lr=lr, weight_decay=weight_decay, warmup_steps=warmup, dice_weight=dice,
        lookup_weight=lookup_weight, cqc_margin=cqc_margin,
        augment=_augment_config(prompt_rot90, prompt_rotate, prompt_flip, prompt_dropout),
        amp=amp, compile=compile, workers=workers, shuffle_buffer=shuffle_buffer, resampled=resampled,
        val_every=val_every, val_pairs=val_pairs, save_every=save_every, log_every=log_every,
        seed=seed, resume=resume, progress=progress, device=device,
        model=_with_discrepancy(_model_config(encoder, encoder_weights, layout, alignment, fusion, topk,
                                              scale_similarity, learn_temperature),
                                discrepancy_stages, discrepancy_pool, lookup_residual),
    )
    path = run_training(cfg)
    typer.echo(f"checkpoint: {path}")


def bench_train_command(
    shards: str = typer.Option(None, "--shards", help="Shards to read (default: 256 builtin pairs generated to a temp dir)."),
    size: int = typer.Option(256, "--size", help="Training input side in px."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per batch."),
    workers: int = typer.Option(2, "--workers", help="Loader worker processes."),
    batches: int = typer.Option(16, "--batches", help="Loader batches timed."),
    steps: int = typer.Option(3, "--steps", help="Training steps timed."),
) -> None:
    """Loader pairs/s (decode + augment) vs training pairs/s, and their ratio (target >= 3)."""
    from metauas.model.network import ModelConfig
    from metauas.trainer.bench import bench_train, bench_train_builtin

    if shards is None:
        r = bench_train_builtin(256, ModelConfig(), size, batch_size, workers, batches, steps)
    else:
        r = bench_train(shards, ModelConfig(), size, batch_size, workers, batches, steps)
    typer.echo(f"size {size}, batch {batch_size}, {workers} loader workers")
    typer.echo(f"loader: {r.loader_pairs_s:.1f} pairs/s   training: {r.train_pairs_s:.2f} pairs/s   "
               f"ratio: {r.ratio:.1f}x (target >= 3x)")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach `train` to the main app, `train` to `bench`."""
    app.command("train")(train_command)
    bench_app.command("train")(bench_train_command)
