"""A recipe over training seeds on the whole dev suite: one command, resumable, one table.

Training seed moves real-defect quality more than the prompt seeds do (docs/quality.md,
"How much is the run"), so a recipe is judged over several training runs, each scored
with 5 prompt seeds on every dev set. `run` trains each seed (resuming an interrupted
run from its last.pt) and scores it with `quality.py model`; both steps are skipped
when their output exists, so the same command continues after a crash or a reboot and
can sit in the background:

    python benchmarks/seeds.py run --work Q --name r-view --seeds 0,1,2 --steps 425 \\
        --data ../shared/data/magnetic-tile-dev --data ../shared/data/glass-dev \\
        --data ../shared/data/pcb-dev --data DEV/objects-dev --heldout HELDOUT \\
        -- --train DATA --size 128 --batch-size 8 --lr 5e-4 --warmup 30
    python benchmarks/seeds.py table --work Q r-base r-view

Everything after `--` goes to `metauas train` as typed (`--out`, `--seed`, `--steps`,
`--resume` are set here). `table` prints, per set and metric, the mean over training
seeds of each run's prompt-seed mean, ± the std over training seeds; the `lookup` row
is the training-free baseline on the same prompts; `suite` is the mean over the real
sets named by --data (not the held-out pairs, not a multi-class set's classes, which
are listed separately under `set/class`).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("I-AUROC", "P-AUROC", "P-AP", "P-AUPRO")


def train_seed(work: Path, name: str, seed: int, steps: int, train_args: list[str]) -> Path:
    """Train one seed unless it finished; resume from last.pt if it was interrupted."""
    run = work / "train" / f"{name}-s{seed}"
    if (run / "done").exists():
        return run
    resume = ["--resume"] if (run / "last.pt").exists() else []
    cmd = [
        sys.executable,
        "-m",
        "metauas.cli",
        "train",
        *train_args,
        "--out",
        str(run),
        "--seed",
        str(seed),
        "--steps",
        str(steps),
        "--no-progress",
        *resume,
    ]
    subprocess.run(cmd, check=True)
    (run / "done").write_text(" ".join(cmd) + "\n")
    return run


def score_seed(work: Path, name: str, seed: int, run: Path, data: list[Path], heldout: Path | None) -> Path:
    """quality.py model on every set, unless its summary exists."""
    out = work / "score" / f"{name}-s{seed}"
    if not (out / "summary.json").exists():
        cmd = [
            sys.executable,
            str(HERE / "quality.py"),
            "model",
            "--checkpoint",
            str(run / "last.pt"),
            "--out",
            str(out),
            *[a for d in data for a in ("--data", str(d))],
            *(["--heldout", str(heldout)] if heldout else []),
        ]
        subprocess.run(cmd, check=True)
    return out / "summary.json"


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def suite_mean(summary: dict, method: str) -> dict[str, float]:
    """Mean over the top-level real sets (no held-out pairs, no set/class rows)."""
    sets = [s for s in summary if s != "heldout" and "/" not in s]
    return {k: sum(summary[s][method]["mean"][k] for s in sets) / len(sets) for k in KEYS}


def collect(work: Path, name: str) -> dict[str, dict[str, dict]]:
    """set -> method -> {metric: [per training seed prompt-mean]}, and the mean prompt std."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((work / "score").glob(f"{name}-s*/summary.json")):
        summary = json.loads(path.read_text())
        summary["suite"] = {m: {"mean": suite_mean(summary, m)} for m in ("model", "lookup")}
        for s, methods in summary.items():
            for method in ("model", "lookup"):
                if method not in methods:
                    continue
                row = out.setdefault(s, {}).setdefault(
                    method, {"runs": {k: [] for k in KEYS}, "prompt_std": {k: [] for k in KEYS}}
                )
                for k in KEYS:
                    row["runs"][k].append(methods[method]["mean"][k])
                    row["prompt_std"][k].append((methods[method].get("std") or {}).get(k) or 0.0)
    return out


def verdict(model: dict, lookup: dict) -> str:
    """Per metric: + (ahead), - (behind) beyond the larger of the training-seed std and the
    mean prompt-seed std of either row, = within that noise."""
    marks = []
    for k in ("I-AUROC", "P-AP", "P-AUPRO"):
        (a, sa), (b, sb) = _mean_std(model["runs"][k]), _mean_std(lookup["runs"][k])
        noise = max(sa, sb, *(sum(r["prompt_std"][k]) / len(r["prompt_std"][k]) for r in (model, lookup)))
        marks.append("=" if abs(a - b) <= noise or min(a, b) >= 1 - 1e-9 else ("+" if a > b else "-"))
    return " ".join(marks)


def table(work: Path, names: list[str]) -> str:
    lines = [
        "| set | run | seeds | " + " | ".join(KEYS) + " | vs lookup (I-AUROC P-AP P-AUPRO) |",
        "|---|---|---|" + "---|" * (len(KEYS) + 1),
    ]
    runs = {n: collect(work, n) for n in names}
    sets = list(dict.fromkeys(s for r in runs.values() for s in r))
    for s in ["suite", *[x for x in sets if x != "suite"]]:
        lookup_done = False
        for n, found in runs.items():
            for method, row in found.get(s, {}).items():
                if method == "lookup" and lookup_done:
                    continue
                lookup_done |= method == "lookup"
                cells = [f"{100 * m:.1f} ± {100 * sd:.1f}" for m, sd in (_mean_std(row["runs"][k]) for k in KEYS)]
                label = n if method == "model" else "lookup"
                judged = verdict(row, found[s]["lookup"]) if method == "model" and "lookup" in found[s] else ""
                lines.append(f"| {s} | {label} | {len(row['runs']['P-AP'])} | " + " | ".join(cells) + f" | {judged} |")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("run", "table"))
    parser.add_argument("names", nargs="*", help="`table`: run names, in the order to list them.")
    parser.add_argument("--work", type=Path, required=True, help="Folder for train/NAME-sS and score/NAME-sS.")
    parser.add_argument("--name", help="`run`: this recipe's name.")
    parser.add_argument("--seeds", default="0,1,2", help="Training seeds (comma-separated).")
    parser.add_argument("--steps", type=int, default=425, help="Optimiser steps of every run.")
    parser.add_argument("--data", type=Path, action="append", default=[], help="A dev set (MVTec layout).")
    parser.add_argument("--heldout", type=Path, help="Builtin held-out pairs (generate --builtin-split heldout).")
    args = parser.parse_args(argv)
    if args.what == "table":
        print(table(args.work, args.names))
        return
    if not args.name:
        parser.error("run needs --name")
    for seed in (int(s) for s in args.seeds.split(",")):
        run = train_seed(args.work, args.name, seed, args.steps, train_args)
        score_seed(args.work, args.name, seed, run, args.data, args.heldout)
        print(f"{args.name} seed {seed}: done", flush=True)
    print(table(args.work, [args.name]))


if __name__ == "__main__":
    main()
