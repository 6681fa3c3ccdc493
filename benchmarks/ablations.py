"""Ablations of the DictAS / FDSL mechanisms (docs/ablations.md): one training recipe,
one variable changed per row, all seven metrics on two sets.

    python benchmarks/ablations.py train --data DEMO/data --out ablate --variants baseline,sparsemax
    python benchmarks/ablations.py shots --data DEMO/data --out ablate --variant baseline \\
        --real ../shared/data/magnetic-tile-dev

`train` trains each variant with the same recipe (steps, size, lr, seed; only the named
option differs) on DEMO/data/train and scores (a) every held-out pair of DEMO/data/heldout
(other photos and scenes; unchanged pairs are the normal images) and (b) a real MVTec-
layout set with random prompts (seeds 1,3,5). `shots` re-scores one trained variant with
1/2/4 prompts under each K-shot fusion, prompt rotations and the model+lookup mix.
Results land in OUT/<variant>/results.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metauas.model.config import ModelConfig
from metauas.trainer.augment import AugmentConfig

METRICS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "P-AUPRO")

# every variant starts from the model before the ablation (the paper's `cat` fusion)
BASE_MODEL = {"fusion": "cat"}
# name -> (model overrides of BASE_MODEL, training overrides, augmentation overrides)
VARIANTS: dict[str, tuple[dict, dict, dict]] = {
    "baseline": ({}, {}, {}),
    "baseline-seed1": ({}, {"seed": 1}, {}),  # run-to-run noise: same recipe, another seed
    "sparsemax": ({"alignment": "sparsemax", "scale_similarity": True}, {}, {}),
    "topk": ({"alignment": "topk", "topk": 8}, {}, {}),
    "temperature": ({"learn_temperature": True}, {}, {}),
    "cat+absdiff": ({"fusion": "cat+absdiff"}, {}, {}),
    "cat+absdiff+cos": ({"fusion": "cat+absdiff+cos"}, {}, {}),
    "cat+absdiff+cos-seed1": ({"fusion": "cat+absdiff+cos"}, {"seed": 1}, {}),
    "lookup-loss": ({}, {"lookup_weight": 1.0}, {}),
    "prompt-aug": ({}, {}, {"prompt_rot90": 0.3, "prompt_flip": 0.3, "prompt_dropout": 0.3}),
}


def train_variant(name: str, data: Path, out: Path, steps: int, lr: float, size: int) -> Path:
    from metauas.trainer.config import TrainConfig
    from metauas.trainer.train import train

    model_kw, train_kw, augment_kw = VARIANTS[name]
    run = out / name / "run"
    cfg = TrainConfig(
        train=str(data / "train"),
        val=str(data / "heldout"),
        out=str(run),
        size=size,
        batch_size=8,
        steps=steps,
        lr=lr,
        warmup_steps=30,
        val_every=max(steps // 4, 1),
        val_pairs=240,
        save_every=steps,
        progress=False,
        model=ModelConfig(**{**BASE_MODEL, **model_kw}),
        augment=AugmentConfig(**augment_kw),
        resume=(run / "last.pt").exists(),
        **{"seed": 0, **train_kw},
    )
    return train(cfg)


def heldout_metrics(checkpoint: Path, data: Path, size: int) -> dict[str, float]:
    from metauas.evaluation.heldout import pair_maps
    from metauas.evaluation.metrics import compute_metrics
    from metauas.model.checkpoint import load_model
    from metauas.trainer.stream import resized_pairs

    model, _ = load_model(checkpoint)
    scores = pair_maps({"model": model.predict}, list(resized_pairs(str(data / "heldout"), size)))
    return compute_metrics(scores.maps["model"], [p["mask"][0].numpy() > 0.5 for p in scores.pairs])


def real_metrics(checkpoint: Path, real: Path, out: Path, **options) -> dict[str, float]:
    from metauas.evaluation.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        data=real,
        checkpoint=checkpoint,
        out=out,
        seeds=(1, 3, 5),
        overlays=0,
        progress=False,
        **{"method": "model", **options},
    )
    rows = evaluate(cfg)["rows"]
    return {r["method"]: r["metrics"] for r in rows if r["class"] == "mean"}


def _row(label: str, metrics: dict[str, float]) -> str:
    return f"| {label} | " + " | ".join(f"{100 * metrics[m]:.1f}" for m in METRICS) + " |"


def _header(first: str) -> str:
    return f"| {first} | " + " | ".join(METRICS) + " |\n|" + "---|" * (len(METRICS) + 1)


def run_train(args: argparse.Namespace) -> None:
    results = {}
    for name in args.variants.split(","):
        checkpoint = train_variant(name, args.data, args.out, args.steps, args.lr, args.size)
        result = {"heldout": heldout_metrics(checkpoint, args.data, args.size)}
        if args.real:
            result["real"] = real_metrics(checkpoint, args.real, args.out / name / "real")["model"]
        result["recipe"] = {"steps": args.steps, "lr": args.lr, "size": args.size, "variant": VARIANTS[name]}
        (args.out / name / "results.json").write_text(json.dumps(result, indent=2))
        results[name] = result
    for split in ("heldout", "real"):
        print(f"\n{split}\n" + _header("variant"))
        for name, result in results.items():
            if split in result:
                print(_row(name, result[split]))


def run_shots(args: argparse.Namespace) -> None:
    checkpoint = args.out / args.variant / "run" / "last.pt"
    settings = [
        (f"{k} shot(s), {fusion}", {"shots": k, "shot_fusion": fusion})
        for k in (1, 2, 4)
        for fusion in (("features",) if k == 1 else ("features", "joint", "mean", "max"))
    ]
    settings += [
        ("1 shot, rotations 0/90/180/270, joint", {"prompt_rotations": (0, 90, 180, 270), "shot_fusion": "joint"})
    ]
    settings += [(f"mix, weight {w}", {"method": "all", "mix_weight": w}) for w in (0.25, 0.5, 0.75)]
    results = {}
    print(_header("setting"))
    for label, options in settings:
        tag = label.replace(" ", "_").replace(",", "").replace("/", "-")
        metrics = real_metrics(checkpoint, args.real, args.out / args.variant / "shots" / tag, **options)
        for method, values in metrics.items():
            name = label if method == "model" else f"{label}: {method}"
            if method != "lookup" or label.endswith("0.25"):  # the lookup row once is enough
                results[name] = values
                print(_row(name, values), flush=True)
    (args.out / args.variant / "shots.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="train and score variants")
    train_p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    train_p.add_argument("--steps", type=int, default=200, help="optimiser steps per variant")
    train_p.add_argument("--lr", type=float, default=5e-4, help="AdamW peak learning rate")
    train_p.add_argument("--size", type=int, default=128, help="pair and model input side")
    shots_p = sub.add_parser("shots", help="re-score one trained variant with K-shot / rotation / mix settings")
    shots_p.add_argument("--variant", default="baseline", help="trained variant to re-score")
    for p in (train_p, shots_p):
        p.add_argument("--data", type=Path, required=True, help="folder with train/ and heldout/ shards")
        p.add_argument("--out", type=Path, required=True, help="results folder")
        p.add_argument("--real", type=Path, default=None, help="MVTec-layout folder with real defects")
    args = parser.parse_args()
    if args.command == "shots" and args.real is None:
        parser.error("shots needs --real (a folder in MVTec layout)")
    (run_train if args.command == "train" else run_shots)(args)


if __name__ == "__main__":
    main()
