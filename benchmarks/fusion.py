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
seeds; with one checkpoint, over its prompt seeds, as `seeds.py table`; `--noise` adds each
cell's prompt-seed std, the other half of the noise rule), and the suite
mean over the sets (a multi-class set counts once, as its classes' mean).
`--topk 100,655` also records, for every weight, the image metrics with the image score
`evaluate --image-score topk --score-topk K` takes (the mean of the map's K highest
pixels in the 256 x 256 frame; 655 is 1%) under the weight `W@topK` (its pixel metrics
are the weight's own: the score rule does not change them).
`--split P:I` adds a what-if row: the map of weight P with the image score of weight I
(the image score is then no longer the map's maximum).
What-ifs on the model's side of the blend (not the product's rule): `--model-floor E`
lifts the model's map to (m + E) / (1 + E) first, so where the model is near 0 it no
longer vetoes the lookup; `--model-blur SIGMA` low-passes it (Gaussian, SIGMA px in the
frame). `--prompt-rotations 0,90,180,270` also feeds each prompt rotated, to both maps
(`evaluate --prompt-rotations`, test-time augmentation). `--maps-cache DIR` keeps each
(set, seed)'s maps in DIR (float32 .npz: 15 to 60 MB per set and seed at 256 px) and reads them on a
rerun, so another blend, floor or weight costs the metrics only (one to two minutes for
the suite instead of ten): one DIR per checkpoint, lookup, lookup encoder and rotations, as it does not check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from error_analysis import class_maps
from quality import LOOKUPS, lookup_variant

KEYS = ("I-AUROC", "P-AUROC", "P-AP", "P-AUPRO")


BLENDS = {
    "geo": lambda m, k, w: np.clip(m, 0, None) ** (1 - w) * np.clip(k, 0, None) ** w,  # the `mix` method
    "mean": lambda m, k, w: (1 - w) * m + w * k,
}


def model_side(m: np.ndarray, floor: float, blur: float) -> np.ndarray:
    """The model's map as `--model-floor` and `--model-blur` change it before the blend."""
    if blur > 0:
        m = cv2.GaussianBlur(np.asarray(m, np.float32), (0, 0), blur, borderType=cv2.BORDER_REFLECT)
    return (np.clip(m, 0, None) + floor) / (1 + floor) if floor > 0 else m


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


# one class's maps of one prompt seed: (name, model maps, lookup maps, masks, labels)
ClassMaps = tuple[str, np.ndarray, np.ndarray, list, list[int]]


def set_maps(args: argparse.Namespace, data: Path, seed: int) -> list[ClassMaps]:
    """The model's and the lookup's maps of each class of `data` for one prompt seed,
    computed once and kept in `--maps-cache` (if given) for later what-ifs."""
    cached = args.maps_cache / f"{data.name}-seed{seed}.npz" if args.maps_cache else None
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            arrays = dict(z)
    else:
        arrays = score_set(args, data, seed)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(cached)
    return [_unpack(arrays, name) for name in sorted({k.split("/")[0] for k in arrays})]


def score_set(args: argparse.Namespace, data: Path, seed: int) -> dict[str, np.ndarray]:
    """Per class, "NAME/model", "NAME/lookup" (N x H x W float32), "NAME/labels" and
    "NAME/masks" (bit-packed; an absent mask as an empty one)."""
    rotations = tuple(int(r) for r in args.prompt_rotations.split(","))
    arrays = {}
    lookup = lookup_variant(args.lookup, args.lookup_encoder)  # on another encoder: paired, as `mix` pairs them
    methods = ("model", "lookup")
    for c, cm in class_maps(args.checkpoint, data, seed, lookup, rotations, methods):
        shape = cm.maps["model"][0].shape
        for method in methods:
            arrays[f"{c.name}/{method}"] = np.stack(cm.maps[method]).astype(np.float32)
        arrays[f"{c.name}/labels"] = np.array([s.label for s in cm.samples])
        masks = [np.zeros(shape, bool) if m is None else np.asarray(m, bool) for m in cm.masks]
        arrays[f"{c.name}/masks"] = np.packbits(np.stack(masks), axis=-1)
    return arrays


def _unpack(arrays: dict, name: str) -> ClassMaps:
    model, labels = arrays[f"{name}/model"], [int(y) for y in arrays[f"{name}/labels"]]
    masks = np.unpackbits(arrays[f"{name}/masks"], axis=-1)[..., : model.shape[-1]].astype(bool)
    # an anomalous image without a mask stays out of the pixel metrics (compute_metrics' None)
    kept = [m if (m.any() or y == 0) else None for m, y in zip(masks, labels, strict=True)]
    return name, model, arrays[f"{name}/lookup"], kept, labels


def sweep(classes: list[ClassMaps], args: argparse.Namespace) -> dict[str, dict[str, dict]]:
    """{class: {weight: metrics}} of one set and prompt seed: each weight's blend of the
    (floored, blurred) model map with the lookup's."""
    from metauas.evaluation.metrics import compute_metrics

    weights = [float(w) for w in args.weights.split(",")]
    topks = tuple(int(k) for k in args.topk.split(",") if k)
    out: dict[str, dict[str, dict]] = {}
    for name, model, lookup, masks, labels in classes:
        model_maps = [model_side(m, args.model_floor, args.model_blur) for m in model]
        out[name] = {}
        for w in weights:
            maps = [BLENDS[args.blend](m, k, w) for m, k in zip(model_maps, lookup, strict=True)]
            out[name][f"{w:g}"] = compute_metrics(maps, masks, labels)
            for k in topks:
                out[name][f"{w:g}@top{k}"] = {**out[name][f"{w:g}"], **image_metrics(maps, labels, k)}
    return out


def run(args: argparse.Namespace) -> None:
    for data in args.data:
        for seed in (int(s) for s in args.seeds.split(",")):
            path = args.out / f"{data.name}-seed{seed}.json"
            if path.exists():
                continue
            result = sweep(set_maps(args, data, seed), args)
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


def table(folders: list[Path], splits: list[str], noise: bool = False) -> str:
    """The markdown table of the module docstring; `noise` adds to each cell the prompt
    seeds' std (each run's, averaged over runs): a difference counts only beyond the
    larger of it and the training-seed std (docs/quality.md, "The protocol")."""
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
            if noise:
                seeds = np.mean([prompt_std([r[x][w] for x in members]) for r in runs], axis=0)
                cells = [f"{c} (p {p:.1f})" for c, p in zip(cells, seeds, strict=True)]
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
    r.add_argument(
        "--lookup-encoder",
        default="",
        help="The lookup's maps from this frozen encoder (a timm name, or `model`: the checkpoint's) instead of "
        "the --lookup variant's own.",
    )
    r.add_argument("--blend", default="geo", choices=list(BLENDS), help="geo: the mix method | mean: arithmetic.")
    r.add_argument("--topk", default="", help="Also the top-k image score at these K (comma-separated), as W@topK.")
    r.add_argument("--model-floor", type=float, default=0.0, help="What-if: the model's map as (m + E) / (1 + E).")
    r.add_argument("--model-blur", type=float, default=0.0, help="What-if: low-pass the model's map (px, frame).")
    r.add_argument(
        "--maps-cache",
        type=Path,
        help="Keep the maps here (one folder per checkpoint, lookup, lookup encoder and rotations); a rerun "
        "with other blend options reads them instead of scoring again.",
    )
    r.add_argument(
        "--prompt-rotations", default="0", help="Also each prompt rotated by these degrees, e.g. 0,90,180,270."
    )
    t = sub.add_parser("table", help="Mean ± std over checkpoints, per set and weight.")
    t.add_argument("folders", type=Path, nargs="+", help="`run` outputs, one per checkpoint (training seed).")
    t.add_argument(
        "--split",
        action="append",
        default=[],
        help="P:I adds a row with the pixel metrics of weight P and the I-AUROC of weight I (repeatable).",
    )
    t.add_argument("--noise", action="store_true", help="Also each cell's prompt-seed std (mean over runs), as (p S).")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        print(table(args.folders, args.split, args.noise))


if __name__ == "__main__":
    main()
