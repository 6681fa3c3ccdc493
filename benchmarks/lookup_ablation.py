"""Ablation of the training-free lookup baseline (docs/quality.md, "Lookup baseline").

    python benchmarks/lookup_ablation.py --data ../shared/data/magnetic-tile-dev \\
        --data ../shared/data/glass-dev --heldout /tmp/heldout256 --out /tmp/lookup-ablation \\
        --cache /tmp/lookup-cache

Encoder features are computed once per image (every test and train/good image of each
MVTec-layout class at --size, the train images also rotated by 90/180/270 degrees for the
prompt-rotation rows; every held-out pair's prompt and query) and kept (in memory, and in
--cache to reuse across runs); every variant is then scored from them. Real classes use
`evaluate`'s protocol exactly (random 1-shot prompts per seed, queries in batches of 8,
the prompt encoded alone, exact-protocol metrics), so the `default-old` row equals
`metauas evaluate --method lookup --seeds 1,3,5,7,9 --size 256`. Held-out pairs: each
query against its own prompt (one run, no seeds). Writes OUT/results.json (every metric,
per seed and mean/std) and OUT/table.md (mean ± std of I-AUROC, P-AUROC, P-AP, P-AUPRO,
and each variant's per-seed difference to the --reference rows on the same prompts).

Seeds can draw the same prompt twice (glass-dev's five seeds draw three distinct images):
`--every-prompt` replaces the seeds with one run per normal training image, each once.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from metauas.evaluation.metrics import METRICS, MetricConfig, compute_metrics
from metauas.inference.config import LookupConfig
from metauas.inference.lookup import lookup_from_features

SEEDS = (1, 3, 5, 7, 9)
BATCH = 8  # evaluate's default --batch-size: the same batches give the same floats
ROTATIONS = (0, 90, 180, 270)
TABLE = ("I-AUROC", "P-AUROC", "P-AP", "P-AUPRO")

# LookupConfig's default before this study, every field spelled out so that rows do not
# move when the defaults do
OLD = {
    "stages": (2, 3),
    "neighbourhood": 3,
    "sigma": 4.0,
    "normalise": "none",
    "exclude": 2,
    "quantile": 0.5,
    "aggregate": "mean",
    "upsample": "finest",
}
# one-shot PatchCore: strides 4, 8, 16, no pooling, no blur, 1 - max cosine summed over
# stages at image size (the mean ranks every pixel as the sum does)
PATCHCORE = {**OLD, "stages": (1, 2, 3), "neighbourhood": 1, "sigma": 0.0, "upsample": "image"}


def _k(k: int | tuple[int, ...]) -> str:
    return "/".join(map(str, k)) if isinstance(k, tuple) else str(k)


# name -> (LookupConfig fields, prompt rotations); round 1 changes one factor of `default-old`
VARIANTS: dict[str, tuple[dict, tuple[int, ...]]] = {
    "default-old": (OLD, (0,)),
    "default": ({}, (0,)),  # LookupConfig() as the code has it now
    "plain-patchcore": (PATCHCORE, (0,)),
    **{
        f"stages={''.join(map(str, s))}": ({**OLD, "stages": s}, (0,))
        for s in [(1,), (2,), (3,), (1, 2), (1, 2, 3), (2, 3, 4), (1, 2, 3, 4)]
    },
    **{f"k={_k(k)}": ({**OLD, "neighbourhood": k}, (0,)) for k in (1, 5, (1, 3), (3, 1), (1, 5))},
    **{f"sigma={s:g}": ({**OLD, "sigma": s}, (0,)) for s in (0.0, 1.0, 2.0, 8.0)},
    "norm=prompt": ({**OLD, "normalise": "prompt"}, (0,)),
    "norm=prompt q=0.9": ({**OLD, "normalise": "prompt", "quantile": 0.9}, (0,)),
    "norm=prompt excl=1": ({**OLD, "normalise": "prompt", "exclude": 1}, (0,)),
    "norm=prompt excl=4": ({**OLD, "normalise": "prompt", "exclude": 4}, (0,)),
    "norm=query": ({**OLD, "normalise": "query"}, (0,)),
    "agg=max": ({**OLD, "aggregate": "max"}, (0,)),
    "agg=geomean": ({**OLD, "aggregate": "geomean"}, (0,)),
    "upsample=image": ({**OLD, "upsample": "image"}, (0,)),
    "prompt-rot4": (OLD, ROTATIONS),
}
K1 = {**OLD, "neighbourhood": 1}  # round 1's clear winner on every set
# round 2: combinations around k=1 (each row names what differs from `k=1`)
VARIANTS |= {
    **{f"k=1 sigma={s:g}": ({**K1, "sigma": s}, (0,)) for s in (0.0, 2.0)},
    **{
        f"k=1 stages={''.join(map(str, s))}": ({**K1, "stages": s}, (0,))
        for s in [(1, 2), (1, 2, 3), (2, 3, 4), (1, 2, 3, 4), (3, 4)]
    },
    "k=1 agg=max": ({**K1, "aggregate": "max"}, (0,)),
    "k=1 agg=geomean": ({**K1, "aggregate": "geomean"}, (0,)),
    "k=1 norm=prompt q=0.9": ({**K1, "normalise": "prompt", "quantile": 0.9}, (0,)),
    "k=1/1/3 stages=123": ({**K1, "stages": (1, 2, 3), "neighbourhood": (1, 1, 3)}, (0,)),
    "k=3/1/1 stages=123": ({**K1, "stages": (1, 2, 3), "neighbourhood": (3, 1, 1)}, (0,)),
    "k=1 stages=234 agg=geomean": ({**K1, "stages": (2, 3, 4), "aggregate": "geomean"}, (0,)),
    "k=1 stages=1234 agg=geomean": ({**K1, "stages": (1, 2, 3, 4), "aggregate": "geomean"}, (0,)),
    "k=1 prompt-rot4": (K1, ROTATIONS),
    "k=1 stages=123 prompt-rot4": ({**K1, "stages": (1, 2, 3)}, ROTATIONS),
    "k=1 stages=234 prompt-rot4": ({**K1, "stages": (2, 3, 4)}, ROTATIONS),
    "plain-patchcore prompt-rot4": (PATCHCORE, ROTATIONS),
}
# round 3: around the round-2 leaders (k=1 with geomean, stage 4 for context)
VARIANTS |= {
    "k=1 stages=123 agg=geomean": ({**K1, "stages": (1, 2, 3), "aggregate": "geomean"}, (0,)),
    "k=1 stages=24": ({**K1, "stages": (2, 4)}, (0,)),
    "k=1 stages=24 agg=geomean": ({**K1, "stages": (2, 4), "aggregate": "geomean"}, (0,)),
    **{
        f"k=1 stages=234 agg=geomean sigma={s:g}": (
            {**K1, "stages": (2, 3, 4), "aggregate": "geomean", "sigma": s},
            (0,),
        )
        for s in (0.0, 2.0)
    },
    "k=1 agg=geomean prompt-rot4": ({**K1, "aggregate": "geomean"}, ROTATIONS),
    "k=1 stages=234 agg=geomean prompt-rot4": ({**K1, "stages": (2, 3, 4), "aggregate": "geomean"}, ROTATIONS),
}


def label(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def load_encoder():
    """The encoder exactly as `metauas evaluate --method lookup` builds it."""
    from metauas.inference.scoring import build_scorer

    scorer, _ = build_scorer(None, ("lookup",), "features", LookupConfig(), torch.device("cpu"))
    return scorer.features


def _keep(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stage 0 (stride 2) is never used: an empty placeholder keeps the stage indices."""
    return [torch.empty(0), *feats[1:]]


def encode_class(encode, root: Path, size: int) -> dict:
    """One MVTec-layout class: test features in evaluate's batches, masks, labels, and
    every train image's features (batch 1, as evaluate encodes a shared prompt) per rotation."""
    from metauas.data.images import read_image
    from metauas.evaluation.evaluate import evaluated_mask
    from metauas.evaluation.readers import read_benchmark
    from metauas.inference.scoring import load_tensor, to_tensor

    (data,) = read_benchmark(root, "mvtec").classes
    batches, masks, problems = [], [], []
    for i in range(0, len(data.test), BATCH):
        samples = data.test[i : i + BATCH]
        images = [read_image(s.path) for s in samples]
        batches.append(_keep(encode(torch.stack([to_tensor(rgb, size) for rgb in images]))))
        masks += [evaluated_mask(s, rgb.shape, size, "exact", problems) for s, rgb in zip(samples, images)]
    train = {
        (str(p), r): _keep(encode(torch.rot90(load_tensor(p, size)[None], r // 90, dims=(2, 3))))
        for p in data.train
        for r in ROTATIONS
    }
    return {
        "name": data.name,
        "train_paths": [str(p) for p in data.train],
        "train": train,
        "batches": batches,
        "masks": masks,
        "labels": [s.label for s in data.test],
        "problems": problems,
    }


def encode_heldout(encode, urls: str, size: int) -> dict:
    """Held-out pairs in batches: query features, and prompt features per rotation."""
    from metauas.trainer.stream import resized_pairs as iter_pairs

    pairs = list(iter_pairs(urls, size))
    batches = []
    for i in range(0, len(pairs), BATCH):
        chunk = pairs[i : i + BATCH]
        prompts = torch.stack([p["prompt"] for p in chunk])
        batches.append(
            {
                "query": _keep(encode(torch.stack([p["query"] for p in chunk]))),
                "prompt": {r: _keep(encode(torch.rot90(prompts, r // 90, dims=(2, 3)))) for r in ROTATIONS},
            }
        )
    masks = [p["mask"][0].numpy() > 0.5 for p in pairs]
    return {"name": "heldout", "batches": batches, "masks": masks, "labels": [int(m.any()) for m in masks]}


def cached(path: Path | None, key: dict, make) -> dict:
    """`make()` once; reused from `path` when it was made with the same `key`."""
    if path is not None and path.is_file():
        stored = torch.load(path, weights_only=False)
        if stored["key"] == key:
            return stored["value"]
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "value": value}, path)
    return value


def _maps(prompt_feats, query_feats, size: int, cfg: LookupConfig) -> list[np.ndarray]:
    m = lookup_from_features(prompt_feats, query_feats, (size, size), cfg).float()
    return [x.cpu().numpy().reshape(size, size) for x in m]


def class_prompts(data: dict, every_prompt: bool) -> dict[str, Path]:
    """Run name -> prompt: the seeds' random picks (seeds may pick the same image), or
    every normal training image once."""
    from metauas.inference.policy import random_prompts

    train = [Path(p) for p in data["train_paths"]]
    if every_prompt:
        return {f"prompt-{p.name}": p for p in train}
    return {f"seed{s}": random_prompts(train, 1, s, data["name"])[0] for s in SEEDS}


def score_class(data: dict, cfg: LookupConfig, rotations, size: int, every_prompt: bool = False) -> dict[str, dict]:
    """Seven metrics per run: the run's 1-shot prompt against every test image."""
    runs = {}
    for run, prompt in class_prompts(data, every_prompt).items():
        shots = [data["train"][(str(prompt), r)] for r in rotations]
        maps = [m for q in data["batches"] for m in _maps(shots, q, size, cfg)]
        runs[run] = compute_metrics(maps, data["masks"], data["labels"], MetricConfig())
    return runs


def score_heldout(data: dict, cfg: LookupConfig, rotations, size: int, every_prompt: bool = False) -> dict[str, dict]:
    maps = [m for b in data["batches"] for m in _maps([b["prompt"][r] for r in rotations], b["query"], size, cfg)]
    return {"pairs": compute_metrics(maps, data["masks"], data["labels"], MetricConfig())}


def summarise(runs: dict[str, dict]) -> dict:
    values = {m: np.array([r[m] for r in runs.values()], float) for m in METRICS}
    return {
        "runs": runs,
        "mean": {m: float(np.nanmean(v)) for m, v in values.items()},
        "std": {m: float(np.nanstd(v)) for m, v in values.items()},
    }


def paired(result: dict, reference: dict) -> dict:
    """Per metric, the variant minus the reference on the same prompts (seed by seed): mean,
    std and how many seeds it is ahead. Prompts are shared, so this is far less noisy than
    comparing the two seed spreads."""
    out = {}
    for m in METRICS:
        d = np.array([result["runs"][r][m] - reference["runs"][r][m] for r in result["runs"]], float)
        out[m] = {
            "mean": float(d.mean()),
            "std": float(d.std()),
            "ahead": int((d > 0).sum()),
            "behind": int((d < 0).sum()),
        }
    return out


def _cell(result: dict, metric: str, seeds: bool) -> str:
    mean = 100 * result["mean"][metric]
    return f"{mean:.1f} ± {100 * result['std'][metric]:.1f}" if seeds else f"{mean:.1f}"


def _delta(d: dict) -> str:
    return f"{100 * d['mean']:+.1f} ± {100 * d['std']:.1f} ({d['ahead']}/{d['ahead'] + d['behind']})"


def write_table(results: dict, datasets: list[str], references: list[str], path: Path) -> str:
    """Per set: mean ± std over seeds; for seeded sets also each variant minus each reference
    on the same prompts (mean ± std of the per-seed difference, seeds ahead / seeds differing)."""
    lines = []
    for name in datasets:
        seeds = name != "heldout"
        rows = [(v, r["datasets"][name]) for v, r in results.items() if name in r["datasets"]]
        lines += [
            f"### {name}" + ("" if seeds else " (one run: each pair's own prompt)"),
            "",
            "| variant | " + " | ".join(TABLE) + " |",
            "|---" * (len(TABLE) + 1) + "|",
        ]
        lines += [f"| {v} | " + " | ".join(_cell(r, m, seeds) for m in TABLE) + " |" for v, r in rows]
        for ref_name in references if seeds else []:
            if ref_name in results:
                ref = results[ref_name]["datasets"][name]
                lines += [
                    "",
                    f"{name}, paired with {ref_name}:",
                    "",
                    "| variant | " + " | ".join(f"Δ {m}" for m in TABLE) + " |",
                    "|---" * (len(TABLE) + 1) + "|",
                ]
                lines += [
                    f"| {v} | " + " | ".join(_delta(paired(r, ref)[m]) for m in TABLE) + " |"
                    for v, r in rows
                    if v != ref_name
                ]
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text)
    return text


def encode_sets(args: argparse.Namespace) -> list[dict]:
    encode = load_encoder()
    sets = []
    for root in args.data:
        key = {"root": str(root.resolve()), "size": args.size, "kind": "mvtec"}
        sets.append(
            cached(
                args.cache and args.cache / f"{root.name}-{args.size}.pt",
                key,
                lambda root=root: encode_class(encode, root, args.size),
            )
        )
    if args.heldout:
        key = {"root": str(args.heldout.resolve()), "size": args.size, "kind": "pairs"}
        sets.append(
            cached(
                args.cache and args.cache / f"heldout-{args.size}.pt",
                key,
                lambda: encode_heldout(encode, str(args.heldout / "shard-*.tar"), args.size),
            )
        )
    return sets


def score_variant(sets: list[dict], name: str, size: int, every_prompt: bool) -> dict:
    fields, rotations = VARIANTS[name]
    cfg, start = LookupConfig(**fields), time.perf_counter()
    score = {d["name"]: score_heldout if d["name"] == "heldout" else score_class for d in sets}
    datasets = {d["name"]: summarise(score[d["name"]](d, cfg, rotations, size, every_prompt)) for d in sets}
    return {
        "config": asdict(cfg),
        "prompt_rotations": list(rotations),
        "datasets": datasets,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", default=[], help="MVTec-layout folder (one class)")
    parser.add_argument("--heldout", type=Path, help="folder of generated held-out shards")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="folder for cached encoder features")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument(
        "--every-prompt",
        action="store_true",
        help="one run per normal training image instead of the seeds' random picks",
    )
    parser.add_argument(
        "--reference",
        default="default-old,default",
        help="comma-separated variants the paired differences are taken to",
    )
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v] or list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    start = time.perf_counter()
    sets = encode_sets(args)
    meta = {
        "size": args.size,
        "runs": "every prompt" if args.every_prompt else f"seeds {SEEDS}",
        "encode_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "problems": [p for d in sets for p in d.get("problems", [])],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:  # written after every variant: an interrupted run keeps what it scored
        results[name] = score_variant(sets, name, args.size, args.every_prompt)
        print(f"{name}: {results[name]['seconds']:.1f} s", flush=True)
        meta["total_seconds"] = time.perf_counter() - start
        (args.out / "results.json").write_text(json.dumps({"meta": meta, "variants": results}, indent=1))
    encoded, total = meta["encode_seconds"], meta["total_seconds"]
    print(write_table(results, [d["name"] for d in sets], args.reference.split(","), args.out / "table.md"))
    print(f"encoding {encoded:.0f} s, total {total:.0f} s")


if __name__ == "__main__":
    main()
