"""How much of the lookup should the model's map take in? The `mix` method's weight,
swept on the dev suite over trained checkpoints, from one scoring pass each.

    python benchmarks/fusion.py run --checkpoint Q/train/base-s0/last.pt --out FUSION/base-s0 \\
        --data ../shared/data/magnetic-tile-dev --data ../shared/data/glass-dev \\
        --data ../shared/data/pcb-dev --data DEV/objects-dev --seeds 1,3,5,7,9
    python benchmarks/fusion.py table FUSION/base-s0 FUSION/base-s1 FUSION/base-s2

`--method mix` scores the weighted geometric mean model ** (1 - w) * lookup ** w
(`--mix-weight w`, a fixed weight, no test-set normalisation). `run` computes the
model's and the lookup's maps once per class and prompt seed (`evaluate`'s random 1-shot
prompts, 256 px, the exact protocol, as `error_analysis.py` draws them) and the seven
metrics of every weight in `--weights` from them: w = 0 is the model, w = 1 the lookup,
so both baselines come from the same maps. Each (set, seed) is written as it finishes
and skipped on a rerun, so the command continues after an interruption. `--lookup
lookup-plain` blends the plain PatchCore lookup instead of the default one
(`quality.py`'s variants). `--blend mean` sweeps the arithmetic blend (1 - w) * model +
w * lookup instead (what `mix` computed before the geometric mean replaced it: a
what-if, not a method the product has). `table` prints, per set and weight, the mean over the
checkpoints of each one's prompt-seed mean ± the sample std over checkpoints (training
seeds; with one checkpoint, over its prompt seeds, as `seeds.py table`), and the suite
mean over the sets (a multi-class set counts once, as its classes' mean).
`--topk 100,655` also records, for every weight, the image metrics with the image score
`evaluate --image-score topk --score-topk K` takes (the mean of the map's K highest
pixels in the 256 x 256 frame; 655 is 1%) under the weight `W@topK` (its pixel metrics
are the weight's own: the score rule does not change them).
`--split P:I` adds a what-if row: the map of weight P with the image score of weight I
(the image score is then no longer the map's maximum).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from error_analysis import class_maps
from quality import LOOKUPS

KEYS = ("I-AUROC", "P-AUROC", "P-AP", "P-AUPRO")


BLENDS = {
    "geo": lambda m, k, w: np.clip(m, 0, None) ** (1 - w) * np.clip(k, 0, None) ** w,  # the `mix` method
    "mean": lambda m, k, w: (1 - w) * m + w * k,
}


def image_metrics(maps: list[np.ndarray], labels: list[int], topk: int) -> dict[str, float]:
    """The image metrics of `maps` with the top-k image score (what compute_metrics gives
    with `--image-score topk`, without its pixel metrics)."""
    from metauas.evaluation.metrics import (
        MetricConfig,
        auroc,
        average_precision,
        counts_from_scores,
        f1_max,
        image_score,
    )

    cfg = MetricConfig(image_score="topk", topk=topk)
    img = counts_from_scores(np.array([image_score(m, cfg) for m in maps]), np.array(labels, bool))
    return {"I-AUROC": auroc(img), "I-AP": average_precision(img), "I-F1max": f1_max(img)}


def sweep(
    checkpoint: Path,
    data: Path,
    seed: int,
    weights: list[float],
    lookup: str,
    blend: str = "geo",
    topks: tuple[int, ...] = (),
) -> dict[str, dict[str, dict]]:
    """{class: {weight: metrics}} of one set and prompt seed, blending with the named lookup."""
    from metauas.evaluation.metrics import compute_metrics

    out: dict[str, dict[str, dict]] = {}
    for c, cm in class_maps(checkpoint, data, seed, LOOKUPS[lookup]):
        labels = [s.label for s in cm.samples]
        out[c.name] = {}
        for w in weights:
            maps = [BLENDS[blend](m, k, w) for m, k in zip(cm.maps["model"], cm.maps["lookup"], strict=True)]
            out[c.name][f"{w:g}"] = compute_metrics(maps, cm.masks, labels)
            for k in topks:
                out[c.name][f"{w:g}@top{k}"] = {**out[c.name][f"{w:g}"], **image_metrics(maps, labels, k)}
    return out


def run(args: argparse.Namespace) -> None:
    weights = [float(w) for w in args.weights.split(",")]
    for data in args.data:
        for seed in (int(s) for s in args.seeds.split(",")):
            path = args.out / f"{data.name}-seed{seed}.json"
            if path.exists():
                continue
            topks = tuple(int(k) for k in args.topk.split(",") if k)
            result = sweep(args.checkpoint, data, seed, weights, args.lookup, args.blend, topks)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)
            print(f"{args.out.name} {data.name} seed {seed}: done", flush=True)


def run_means(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{set: {weight: seeds x KEYS array}}: one checkpoint's metrics per prompt seed and
    set (a set with several classes as their mean)."""
    per: dict[str, dict[str, list[np.ndarray]]] = {}
    for path in sorted(folder.glob("*-seed*.json")):
        name = path.stem.rsplit("-seed", 1)[0]
        classes = json.loads(path.read_text())
        for w in next(iter(classes.values())):
            vec = np.mean([[100 * classes[c][w][k] for k in KEYS] for c in classes], axis=0)
            per.setdefault(name, {}).setdefault(w, []).append(vec)
    return {s: {w: np.array(v) for w, v in ws.items()} for s, ws in per.items()}


def split_rows(runs: list[dict[str, dict[str, np.ndarray]]], pixels: str, image: str) -> None:
    """Add the weight `pixels:image` to each run: the pixel metrics of one blend with the
    image score (I-AUROC) of another."""
    for r in runs:
        for ws in r.values():
            ws[f"{pixels}:{image}"] = np.concatenate([ws[image][:, :1], ws[pixels][:, 1:]], axis=1)


def prompt_std(per_set: list[np.ndarray]) -> np.ndarray:
    """The std over prompt seeds of the sets' mean (each array: seeds x KEYS); NaN while
    a run is unfinished and the sets hold different numbers of seeds."""
    if len({len(a) for a in per_set}) > 1:
        return np.full(len(KEYS), np.nan)
    return np.mean(per_set, axis=0).std(0, ddof=1)


def table(folders: list[Path], splits: list[str]) -> str:
    runs = [run_means(f) for f in folders]
    sets = list(runs[0])
    for pair in splits:
        split_rows(runs, *pair.split(":"))
    weights = list(runs[0][sets[0]])
    lines = ["| set | w | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for s in [*sets, "suite"]:
        for w in weights:
            members = sets if s == "suite" else [s]
            # each run's mean (the suite: the mean of its sets' means)
            vals = np.array([np.mean([r[x][w].mean(0) for x in members], axis=0) for r in runs])
            # as seeds.py: the std over training runs; with one run, over its prompt seeds
            spread = vals.std(0, ddof=1) if len(vals) > 1 else prompt_std([runs[0][x][w] for x in members])
            cells = [f"{m:.1f} ± {d:.1f}" for m, d in zip(vals.mean(0), spread, strict=True)]
            lines.append(f"| {s} | {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="Score one checkpoint and sweep the weights.")
    r.add_argument("--checkpoint", type=Path, required=True, help="A trained model (last.pt or best.pt).")
    r.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout folder, repeatable.")
    r.add_argument("--out", type=Path, required=True, help="Folder of one JSON per set and prompt seed.")
    r.add_argument("--seeds", default="1,3,5,7,9", help="Prompt seeds.")
    r.add_argument("--weights", default="0,0.5,0.7,0.8,0.9,0.95,0.98,1", help="Lookup weights w to sweep.")
    r.add_argument("--lookup", default="lookup-default", choices=list(LOOKUPS), help="The lookup blended in.")
    r.add_argument("--blend", default="geo", choices=list(BLENDS), help="geo: the mix method | mean: arithmetic.")
    r.add_argument("--topk", default="", help="Also the top-k image score at these K (comma-separated), as W@topK.")
    t = sub.add_parser("table", help="Mean ± std over checkpoints, per set and weight.")
    t.add_argument("folders", type=Path, nargs="+", help="`run` outputs, one per checkpoint (training seed).")
    t.add_argument(
        "--split",
        action="append",
        default=[],
        help="P:I adds a row with the pixel metrics of weight P and the I-AUROC of weight I (repeatable).",
    )
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        print(table(args.folders, args.split))


if __name__ == "__main__":
    main()
