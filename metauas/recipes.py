"""Recipes: a published configuration as data, applied by one flag (`--recipe NAME`).

A recipe maps, per command, dotted config fields to values (`"model.fusion": "cat"`).
A command applies it on top of its defaults (and of `--config FILE`), and every option
the user types still wins, so `--recipe paper --size 64` is the paper with a toy size.
The values land in the run's config like any other setting (index.json, config.json),
so `--config` repeats a recipe run without naming the recipe. docs/reproduce.md lists
each value beside the paper's statement and says what could not be verified.

This module is data only (no imports of ours) so every command, torch-free ones
included, can read it.
"""

from __future__ import annotations

from typing import Any

from metauas.errors import UserError

# The paper's object-level vs local changes drawn 0.5 / 0.5 (its appendix); inside the
# object-level half, its three kinds equally (our reading: the split is not stated).
PAPER_CHANGES = {"disappear": 1.0, "appear": 1.0, "exchange": 1.0, "local": 3.0, "none": 0.0}

_PAPER_GENERATE = {
    "source": "coco",  # 60k COCO train2017 images ...
    "coco_max_images": 60000,
    "coco_val_fraction": 0.05,  # ... split 0.95 / 0.05 into training and validation images
    "coco_split": "train",  # the validation set: the same command with --coco-split val
    "inpainter": "lama",
    "change_weights": PAPER_CHANGES,
    "size": 256,
}

_PAPER_TRAIN = {
    # the encoder of the authors' checkpoint: TF-ported b4 (timm's name for its AutoAugment
    # ImageNet weights), smp's stage layout, "same" padding fixed for 380 px
    "model.encoder.name": "tf_efficientnet_b4.aa_in1k",
    "model.encoder.layout": "official",
    "model.encoder.static_pad_size": 380,
    "model.aligned_stages": 3,
    "model.alignment": "soft",
    "model.scale_similarity": False,
    "model.learn_temperature": False,
    "model.fusion": "cat",
    "model.decoder_channels": [256, 128, 64, 64, 48],
    "model.attention": "scse",
    "model.discrepancy_stages": [],  # the paper's model aligns the deep stages only
    "model.lookup_residual": 0.0,
    "size": 256,
    "lr": 1e-4,
    "weight_decay": 5e-4,
    "global_batch_size": 128,  # 8 GPUs x 16; split over WORLD_SIZE
    "epochs": 30,
    "dice_weight": 0.0,
    "lookup_weight": 0.0,
    "augment.prompt_rot90": 0.0,
    "augment.prompt_rotate": 0.0,
    "augment.prompt_flip": 0.0,
    "augment.prompt_dropout": 0.0,
}

# The reference CPU recipe (docs/quality.md, "The reference CPU recipe"): what gave the
# most real-defect quality in about an hour on 2 CPU cores, builtin source at 128 px.
# `generate --recipe cpu` needs --num-pairs (16000 there) and --out; `train --recipe cpu`
# needs --train and --out (add --val folders of real defects for the learning curve).
_CPU_GENERATE = {"source": "builtin", "size": 128}
_CPU_TRAIN = {
    "size": 128,
    "batch_size": 8,
    "steps": 2400,
    "lr": 5e-4,  # a short run takes larger steps than the paper's 1e-4 (docs/benchmarks.md)
    "warmup_steps": 30,
    "val_every": 400,
    "save_every": 100,  # an interrupted hour loses at most ~2 minutes (--resume)
    "model.discrepancy_stages": [0, 1, 2, 3],
}

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"generate": _PAPER_GENERATE, "train": _PAPER_TRAIN},
    "paper-512": {"generate": {**_PAPER_GENERATE, "size": 512}, "train": {**_PAPER_TRAIN, "size": 512}},
    "cpu": {"generate": _CPU_GENERATE, "train": _CPU_TRAIN},
}


def recipe(name: str | None, command: str) -> dict[str, Any]:
    """The dotted field -> value settings of recipe `name` for `command` ({} for None)."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise UserError(f"unknown `recipe` {name!r}: use {'|'.join(RECIPES)}")
    return dict(RECIPES[name].get(command, {}))
