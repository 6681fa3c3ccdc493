"""Where a checkpoint loses to the lookup, per class: false alarms on nuisance, or missed
small defects? And is the image score calibrated?

    python benchmarks/error_analysis.py --checkpoint RUN/last.pt --out EA/run \\
        --data ../shared/data/pcb-dev --data DEV/objects-dev --seeds 1,3

For each class and method (model, lookup), with `evaluate`'s random prompts of each seed at
256 px, every map is measured against one threshold per method and class: the 99th
percentile of the method's pixel scores on the class's *normal* test images, so 1% of
normal pixels is flagged and both methods are compared at the same false-alarm rate:

- `recall small/medium/large`: share of defect components (8-connected, in the ground
  truth) whose highest score passes the threshold, by area (< 0.1%, 0.1-1%, > 1% of the
  image);
- `fa on defective`: share of pixels outside the (8 px dilated) ground truth of defective
  images that pass it: nuisance flagged where a defect also is (1% would match normals);
- `max off-defect`: share of defective images whose map maximum (the image score) lies
  outside the dilated ground truth: the image decision made by nuisance;
- `I-AUROC max / p99 / top1%`: the image score as the map's max, its 99th percentile, the
  mean of its top 1%;
- `I-AUROC edges` (method `no prompt`): the share of edge pixels (Canny) of the query alone,
  which sees no prompt and no defect: where it ranks defective images above normal ones,
  the class's labels go with its content, and a method that flags whatever the prompt
  lacks earns image-level credit for that content, not for the defects.

Pictures (OUT/<class>.png): prompt | query | truth | model | lookup for the model's worst
defective images by pixel AP; each map is coloured up to its method's threshold x 2, so
red means "twice the score of all but 1% of normal pixels" for both methods alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from metauas.inference.config import LookupConfig

SIZE = 256
BINS = (("small", 0.0, 0.001), ("medium", 0.001, 0.01), ("large", 0.01, 1.01))


def class_maps(
    checkpoint: Path | None,
    data: Path,
    seed: int,
    lookup: LookupConfig | None = None,
    rotations: tuple[int, ...] = (0,),
    methods: tuple[str, ...] = ("model", "lookup"),
) -> list:
    """(class data, ClassMaps) per class of `data` with the seed's random 1-shot prompts,
    each also seen rotated by `rotations` degrees (`evaluate --prompt-rotations`);
    `lookup` is a LookupConfig (the default lookup when None). `methods=("lookup",)`
    needs no checkpoint: the same prompts, the lookup alone."""
    from metauas.devices import resolve_device
    from metauas.evaluation.config import EvalConfig
    from metauas.evaluation.evaluate import score_class
    from metauas.evaluation.readers import read_benchmark
    from metauas.inference.config import LookupConfig
    from metauas.inference.policy import PromptPolicy
    from metauas.inference.prompts import PromptBank
    from metauas.inference.scoring import build_scorer

    method = "both" if "model" in methods else "lookup"
    cfg = EvalConfig(data=data, out=Path("."), checkpoint=checkpoint, method=method, size=SIZE, progress=False)
    scorer, _ = build_scorer(checkpoint, methods, "features", lookup or LookupConfig(), resolve_device("cpu"))
    run, out = PromptPolicy("random", seed, 1, rotations), []
    for c in read_benchmark(data, "mvtec").classes:
        bank = PromptBank(run, run.candidates(c.name, c.train), SIZE, scorer)
        out.append((c, score_class(cfg, scorer, c, SIZE, bank, [])))
    return out


def _auroc(normal: list[float], anomalous: list[float]) -> float:
    n, a = np.asarray(normal), np.asarray(anomalous)
    return float(((a[:, None] > n[None]).mean() + 0.5 * (a[:, None] == n[None]).mean()))


def analyse(cm, method: str) -> dict:
    maps = cm.maps[method]
    labels = [s.label for s in cm.samples]
    normal_pixels = np.concatenate([m.ravel() for m, y in zip(maps, labels) if y == 0])
    t = float(np.quantile(normal_pixels, 0.99))
    hits = {name: [] for name, _, _ in BINS}
    fa, off, scores = [], [], {k: ([], []) for k in ("max", "p99", "top1%")}
    for m, mask, y in zip(maps, cm.masks, labels):
        flat = np.sort(m.ravel())
        for k, v in (
            ("max", flat[-1]),
            ("p99", flat[int(0.99 * (flat.size - 1))]),
            ("top1%", flat[-max(1, flat.size // 100) :].mean()),
        ):
            scores[k][y].append(float(v))
        if y == 0 or mask is None:
            continue
        near = cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        fa.append(float((m[~near] > t).mean()))
        off.append(bool(not near.flat[int(m.argmax())]))
        n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        for j in range(1, n):
            part = comp == j
            area = part.mean()
            name = next(b for b, lo, hi in BINS if lo <= area < hi)
            hits[name].append(bool(m[part].max() > t))
    out = {f"recall {k}": (float(np.mean(v)), len(v)) for k, v in hits.items() if v}
    out.update({"fa on defective": float(np.mean(fa)), "max off-defect": float(np.mean(off)), "threshold": t})
    out.update({f"I-AUROC {k}": _auroc(*v) for k, v in scores.items()})
    return out


def edge_baseline(cm) -> dict:
    """I-AUROC of the query's edge density alone (no prompt, no map)."""
    from metauas.data.images import read_image

    scores: tuple[list[float], list[float]] = ([], [])
    for s in cm.samples:
        grey = cv2.cvtColor(
            cv2.resize(read_image(s.path), (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
        )
        scores[s.label].append(float((cv2.Canny(grey, 50, 150) > 0).mean()))
    return {"I-AUROC edges": _auroc(*scores)}


def picture(cm, path: Path, rows: int = 4) -> None:
    from metauas.data.images import read_image
    from metauas.evaluation.metrics import average_precision, counts_from_scores
    from metauas.inference.overlay import heatmap, overlay_row
    from metauas.inference.scoring import to_tensor

    labels = [s.label for s in cm.samples]
    t = {
        m: float(np.quantile(np.concatenate([x.ravel() for x, y in zip(cm.maps[m], labels) if y == 0]), 0.99))
        for m in ("model", "lookup")
    }
    ranked = sorted(
        (average_precision(counts_from_scores(cm.maps["model"][i], cm.masks[i])), i)
        for i, y in enumerate(labels)
        if y == 1 and cm.masks[i] is not None
    )
    strips = []
    for _, i in ranked[:rows]:
        query = to_tensor(read_image(cm.samples[i].path), SIZE)
        row = overlay_row(
            to_tensor(read_image(cm.prompts[i][0]), SIZE), query, cm.masks[i], cm.maps["model"][i], 2 * t["model"]
        )
        base = (query.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        lookup = heatmap(cm.maps["lookup"][i], base, vmax=2 * t["lookup"])
        strips.append(np.concatenate([row, np.full((SIZE, 2, 3), 255, np.uint8), lookup], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(strips, axis=0), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="1,3")
    args = parser.parse_args()
    found: dict[str, dict[str, list[dict]]] = {}
    for data in args.data:
        for seed in (int(s) for s in args.seeds.split(",")):
            for c, cm in class_maps(args.checkpoint, data, seed):
                for method in ("model", "lookup"):
                    found.setdefault(c.name, {}).setdefault(method, []).append(analyse(cm, method))
                if seed == int(args.seeds.split(",")[0]):
                    found[c.name]["no prompt"] = [edge_baseline(cm)]
                    picture(cm, args.out / f"{c.name}.png")
            print(f"{data.name} seed {seed}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analysis.json").write_text(json.dumps(found, indent=2))
    keys = list(dict.fromkeys(k for m in found.values() for runs in m.values() for r in runs for k in r))
    keys = [k for k in sorted(keys, key=lambda k: (not k.startswith("recall"), k)) if k != "threshold"]
    print("| class | method | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for name, methods in found.items():
        for method, runs in methods.items():
            cells = []
            for k in keys:
                vals = [r[k][0] if isinstance(r[k], tuple | list) else r[k] for r in runs if k in r]
                cells.append(f"{100 * np.mean(vals):.1f}" if vals else "-")
            print(f"| {name} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
