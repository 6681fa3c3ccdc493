"""The measuring protocol of docs/quality.md: one checkpoint (or the lookup baselines) on the
real dev classes and the builtin held-out pairs, every number as mean ± std over prompt seeds.

    python benchmarks/quality.py model --checkpoint RUN/last.pt --out Q/run \\
        --data ../shared/data/magnetic-tile-dev --data ../shared/data/glass-dev --heldout HELDOUT
    python benchmarks/quality.py lookups --out Q/lookups --data ... --data ... --heldout HELDOUT

`model` runs `metauas evaluate --method all --seeds 1,3,5,7,9 --size 256` (exact protocol,
random 1-shot prompts: the same `evaluate()` the CLI calls) on each --data folder, and
scores every pair of HELDOUT (`generate --source builtin --builtin-split heldout
--num-pairs 240 --seed 1`) as the demo does (`metauas/evaluation/heldout.py`; unchanged pairs are the normals).
`lookups` does the same for the training-free baselines: the current default
(`--method lookup`; lite2, blur 2), the "plain PatchCore" variant (stages at strides 4, 8, 16, no
pooling, no blur; the mean over stages ranks pixels as their sum does), and the
variants between the two, on lite0 (`LOOKUPS`; `--only` picks some, `--lookup-encoder`
puts every chosen variant on another encoder, e.g. lookup-s23-blur4 on lite2).
Each writes OUT/summary.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from metauas.inference.lookup import LookupConfig

KEYS = ("I-AUROC", "P-AUROC", "P-AP", "P-AUPRO")
LITE0 = "tf_efficientnet_lite0"  # the variants below were measured on lite0, the default before lite2
LOOKUPS = {
    "lookup-default": LookupConfig(),
    "lookup-plain": LookupConfig(encoder=LITE0, stages=(1, 2, 3), neighbourhood=1, sigma=0.0),
    # the default before 2026-12-05 (lite0, blur 4), the corners between it and plain (1,2,3, no blur)
    "lookup-s23-blur4": LookupConfig(encoder=LITE0, stages=(2, 3), sigma=4.0),
    "lookup-s123-blur": LookupConfig(encoder=LITE0, stages=(1, 2, 3), sigma=4.0),
    "lookup-s123-blur2": LookupConfig(encoder=LITE0, stages=(1, 2, 3), sigma=2.0),
    "lookup-s23-sharp": LookupConfig(encoder=LITE0, stages=(2, 3), sigma=0.0),
    "lookup-s23-blur1": LookupConfig(encoder=LITE0, stages=(2, 3), sigma=1.0),
    "lookup-s23-blur2": LookupConfig(encoder=LITE0, stages=(2, 3), sigma=2.0),
}


def lookup_variant(name: str, encoder: str = "") -> LookupConfig:
    """`LOOKUPS[name]`, on `encoder` instead of its own where one is given (a timm name, or
    `model`: the checkpoint's): the benchmarks' `--lookup` and `--lookup-encoder`."""
    cfg = LOOKUPS[name]
    return dataclasses.replace(cfg, encoder=encoder) if encoder else cfg


def evaluate_real(
    data: Path, out: Path, checkpoint: Path | None, method: str, lookup: LookupConfig, seeds: tuple[int, ...], size: int
) -> dict[str, dict[str, dict]]:
    """Set or class -> method -> {"mean": {metric: fraction}, "std": {...}} for `data`: the
    set's mean row under the folder's name and, for a set of several classes, each class
    under "name/class"."""
    from metauas.evaluation.evaluate import EvalConfig, evaluate

    result = evaluate(
        EvalConfig(
            data=data,
            out=out,
            checkpoint=checkpoint,
            method=method,
            seeds=seeds,
            size=size,
            lookup=lookup,
            overlays=0,
            progress=False,
        )
    )
    classes = {r["class"] for r in result["rows"]} - {"mean"}
    found: dict[str, dict[str, dict]] = {}
    for r in result["rows"]:
        if r["class"] == "mean" or len(classes) > 1:
            key = data.name if r["class"] == "mean" else f"{data.name}/{r['class']}"
            found.setdefault(key, {})[r["method"]] = {"mean": r["metrics"], "std": r["std"] or {}}
    return found


def heldout(checkpoint: Path | None, folder: Path, size: int, lookups: dict[str, LookupConfig]) -> dict:
    """method -> metrics on every held-out pair, scored as the demo does."""
    import torch

    from metauas.evaluation.heldout import HeldoutScores, heldout_metrics, pair_maps
    from metauas.inference.lookup import lookup_map
    from metauas.inference.scoring import scoring_encoder
    from metauas.trainer.stream import resized_pairs

    pairs = list(resized_pairs(str(folder), size))
    methods = {}
    model = None
    if checkpoint is not None:
        from metauas.inference.prepared import prepare_for_inference
        from metauas.model.checkpoint import load_model

        model = prepare_for_inference(load_model(checkpoint)[0])
        methods["model"] = model.predict
    encoders: dict[str, torch.nn.Module] = {}
    for name, cfg in lookups.items():
        if cfg.encoder not in encoders:  # each lookup on its own encoder, or the model's (`model`)
            encoders[cfg.encoder] = scoring_encoder(("lookup",), cfg, model)
        methods[name] = (lambda e, c: lambda p, q: lookup_map(e, p, q, c))(encoders[cfg.encoder], cfg)
    scores: HeldoutScores = pair_maps(methods, pairs)
    if checkpoint is not None:
        for name in lookups:
            mixed = [0.5 * a + 0.5 * b for a, b in zip(scores.maps["model"], scores.maps[name])]
            scores.maps[f"mix({name})"] = mixed
    with torch.inference_mode():
        return {name: {"mean": m} for name, m in heldout_metrics(scores).items()}


def fmt(entry: dict, key: str) -> str:
    mean, std = entry["mean"].get(key, math.nan), entry.get("std", {}).get(key)
    text = f"{100 * mean:.1f}"  # metrics are fractions; tables show %
    return text + (f" ± {100 * std:.1f}" if std is not None and not math.isnan(std) else "")


def table(summary: dict) -> str:
    lines = ["| set | method | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for name, methods in summary.items():
        for method, entry in methods.items():
            lines.append(f"| {name} | {method} | " + " | ".join(fmt(entry, k) for k in KEYS) + " |")
    return "\n".join(lines)


def merged_tables(folders: list[Path], methods: tuple[str, ...] = ("model",)) -> str:
    """One table per set (dev class, heldout): a row per run folder (its `methods`)."""
    runs = {f.name: json.loads((f / "summary.json").read_text()) for f in folders}
    sets = list(dict.fromkeys(name for summary in runs.values() for name in summary))
    out = []
    for name in sets:
        out += [f"\n{name}:\n", "| run | method | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
        for run, summary in runs.items():
            for method, entry in summary.get(name, {}).items():
                if method in methods or not methods:
                    out.append(f"| {run} | {method} | " + " | ".join(fmt(entry, k) for k in KEYS) + " |")
    return "\n".join(out)


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "table":  # python quality.py table Q/a Q/b [--all]
        folders = [Path(a) for a in sys.argv[2:] if not a.startswith("--")]
        print(merged_tables(folders, () if "--all" in sys.argv else ("model",)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("model", "lookups"))
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, action="append", default=[])
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--seeds", default="1,3,5,7,9")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--only", default=None, help="Comma-separated lookup variants for `lookups` (default: all).")
    parser.add_argument(
        "--lookup",
        default="lookup-default",
        help="Lookup variant used by the model's `lookup` and `mix` rows: " + " | ".join(LOOKUPS),
    )
    parser.add_argument(
        "--lookup-encoder",
        default="",
        help="Every lookup variant (and the --lookup of `model`) on this frozen encoder instead of its own, "
        "e.g. tf_efficientnet_lite1 (its offline package installed) or `model`.",
    )
    parser.add_argument(
        "--frame-blur",
        type=float,
        default=0.0,
        help="What-if, not the product: a Gaussian low-pass of this many px on every input in the model's frame "
        "(scale_spread.py's; the held-out pairs are not affected).",
    )
    args = parser.parse_args()
    if args.frame_blur > 0:
        from scale_spread import blur_the_frame

        blur_the_frame(args.frame_blur)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    variants = {k: lookup_variant(k, args.lookup_encoder) for k in LOOKUPS}
    chosen = {k: variants[k] for k in args.only.split(",")} if args.only else variants
    summary: dict[str, dict] = {}
    for data in args.data:
        if args.what == "model":
            summary.update(
                evaluate_real(
                    data, args.out / data.name, args.checkpoint, "all", variants[args.lookup], seeds, args.size
                )
            )
        else:
            for name, cfg in chosen.items():
                found = evaluate_real(data, args.out / data.name / name, None, "lookup", cfg, seeds, args.size)
                for key, methods in found.items():
                    summary.setdefault(key, {})[name] = methods["lookup"]
        print(f"{data.name}: done", flush=True)
    if args.heldout is not None:
        summary["heldout"] = heldout(args.checkpoint if args.what == "model" else None, args.heldout, args.size, chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))


if __name__ == "__main__":
    main()
