"""Size and shape of change masks: real defect masks (MVTec-layout ground truth) against the
masks of synthetic change pairs (changepair/1 shards), per change type (and `local` kind).

    python benchmarks/mask_stats.py --real ../shared/data/magnetic-tile-dev --real ../shared/data/glass-dev \\
        --shards data/builtin-train-128 --max-pairs 2000

Real masks are measured in the evaluation frame (resized to --size x --size, nearest, as
`metauas evaluate` does); synthetic masks at --train-size (default 128, the CPU recipes'
training input): widths in pixels are what the convolutions see in each case. Per connected
component (8-connectivity) and per image:
- area: the changed fraction of the image (per image) / of a component;
- components: connected components per image;
- width: a component's mean width in pixels at --size, area / skeleton length
  (a 3 px scratch has width ~3 whatever its length; a disc of diameter d has ~d/2..d);
- elongation: skeleton length / width (1-3 for blobs, >> 5 for scratches and cracks).
Printed as medians and 10/90 percentiles; `--json` writes every row.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np


def component_stats(mask: np.ndarray) -> list[dict]:
    from skimage.morphology import skeletonize

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = []
    total = mask.size
    for c in range(1, n):
        comp = labels == c
        area = int(comp.sum())
        skeleton = max(1, int(skeletonize(comp).sum()))
        width = area / skeleton
        out.append({"area": area / total, "width": width, "elongation": skeleton / max(width, 1e-6)})
    return out


def image_stats(mask: np.ndarray, size: int) -> dict:
    mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    comps = component_stats(mask)
    return {"area": float(mask.mean()), "components": len(comps), "parts": comps}


def real_masks(root: Path):
    for path in sorted(root.glob("*/ground_truth/*/*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is not None and mask.any():
            yield f"{root.name}/{path.parent.name}", mask > 127


def shard_masks(folder: Path, max_pairs: int):
    from metauas.data.format import iter_pairs

    for i, pair in enumerate(iter_pairs(str(folder))):
        if i >= max_pairs:
            break
        meta = pair["meta"]
        if meta["change"] == "none":
            continue
        kind = meta["change"]
        local_kind = meta.get("params", {}).get("mask", {}).get("kind") if kind == "local" else None
        name = f"{folder.name}/{kind}" + (f":{local_kind}" if local_kind else "")
        yield name, pair["mask"] > 0  # measured at --train-size


def summarise(rows: dict[str, list[dict]]) -> list[str]:
    def pct(values, q):
        return np.percentile(values, q) if len(values) else float("nan")

    lines = [
        "| masks | n | area % (p10 / median / p90) | components (median, p90) "
        "| component width px (p10 / median / p90) | elongation (median / p90) | components < 0.1% area |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, items in rows.items():
        area = [100 * r["area"] for r in items]
        comps = [r["components"] for r in items]
        parts = [p for r in items for p in r["parts"]]
        width = [p["width"] for p in parts]
        elong = [p["elongation"] for p in parts]
        tiny = np.mean([p["area"] < 0.001 for p in parts]) * 100 if parts else float("nan")
        lines.append(
            f"| {name} | {len(items)} | {pct(area, 10):.2f} / {pct(area, 50):.2f} / {pct(area, 90):.2f} | "
            f"{pct(comps, 50):.0f}, {pct(comps, 90):.0f} | {pct(width, 10):.1f} / {pct(width, 50):.1f} / "
            f"{pct(width, 90):.1f} | {pct(elong, 50):.1f} / {pct(elong, 90):.1f} | {tiny:.0f}% |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, action="append", default=[])
    parser.add_argument("--shards", type=Path, action="append", default=[])
    parser.add_argument("--max-pairs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256, help="Frame of the real masks (evaluation size).")
    parser.add_argument("--train-size", type=int, default=128, help="Frame of the synthetic masks (training size).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = defaultdict(list)
    for root in args.real:
        for name, mask in real_masks(root):
            rows[name].append(image_stats(mask, args.size))
    for folder in args.shards:
        for name, mask in shard_masks(folder, args.max_pairs):
            rows[name].append(image_stats(mask, args.train_size))
    print("\n".join(summarise(dict(sorted(rows.items())))))
    if args.json:
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
