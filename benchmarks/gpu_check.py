"""Every CUDA-only code path once, then one table: run this first on a GPU machine.

    benchmarks/gpu_check.sh                # CUDA: DDP on up to 2 GPUs, a few hundred steps
    benchmarks/gpu_check.sh --cpu --tiny   # the same steps on the CPU, toy sizes (the test suite runs it)

Each step is the command a user would type, in a subprocess; the first one that fails
stops the check, prints its error and exits 1. Nothing is downloaded (random encoder
weights; GPU machines here reach no network). The steps:

1. generate builtin training and held-out pairs;
2. DDP training under torchrun (NCCL on CUDA, gloo on the CPU) with the paper's recipe
   (b4 exactly as the authors', `cat`), AMP (bf16 where the GPU has it), device-side
   augmentation, channels_last, pinned non-blocking copies; then resumed for more steps
   (the CUDA RNG state is saved and restored);
3. on CUDA, a short fp16 run (the gradient scaler's path);
4. `bench train` on the device (loader, device augmentation, host-to-device copies), fed
   the training rate step 2 measured, for the GPUs-per-node table;
5. `bench model` on the device;
6. `evaluate` (both methods, two seeds; one when tiny) on a small MVTec-layout set built
   from the held-out pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

PY = sys.executable


@dataclass
class Check:
    """The check's settings and the rows of its table."""

    device: str
    gpus: int
    out: Path
    size: int
    steps: int
    batch: int  # global
    pairs: int
    workers: int
    paper: bool
    rows: list[tuple[str, float, str]] = field(default_factory=list)

    def run(self, name: str, args: list[str], env: dict | None = None) -> str:
        """Run one step; on failure print everything so far and stop with status 1."""
        print(f"[gpu_check] {name}: {shlex.join(args)}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            self.rows.append((name, seconds, f"FAILED (exit {proc.returncode})"))
            self.table()
            print(
                f"\n--- {name} failed: stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}",
                file=sys.stderr,
            )
            sys.exit(1)
        self.rows.append((name, seconds, ""))
        return proc.stdout

    def note(self, result: str) -> None:
        name, seconds, _ = self.rows[-1]
        self.rows[-1] = (name, seconds, result)

    def table(self) -> None:
        print("\n| step | seconds | result |\n|---|---|---|")
        for name, seconds, result in self.rows:
            print(f"| {name} | {seconds:.1f} | {result or 'ok'} |")


def cli(*args: str) -> list[str]:
    return [PY, "-m", "metauas.cli", *args]


def torchrun(gpus: int, *args: str) -> list[str]:
    return [
        PY,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(gpus),
        "-m",
        "metauas.cli",
        *args,
    ]


def mvtec_from_pairs(shards: Path, root: Path) -> Path:
    """A one-class MVTec-layout set from change pairs: the first half's prompts are the
    normal training images; of the second half, changed queries (with their masks) are
    the anomalies and prompts the normal test images."""
    from metauas.data.format import iter_pairs

    pairs = list(iter_pairs(str(shards)))
    cls = root / "heldout"
    for i, pair in enumerate(pairs):
        bgr = {k: cv2.cvtColor(pair[k], cv2.COLOR_RGB2BGR) for k in ("prompt", "query")}
        if i < len(pairs) // 2:
            _write(cls / "train" / "good" / f"{i:04d}.png", bgr["prompt"])
        elif pair["mask"].any():
            _write(cls / "test" / "change" / f"{i:04d}.png", bgr["query"])
            _write(cls / "ground_truth" / "change" / f"{i:04d}_mask.png", pair["mask"] * 255)
        else:
            _write(cls / "test" / "good" / f"{i:04d}.png", bgr["query"])
        if i >= len(pairs) // 2:
            _write(cls / "test" / "good" / f"p{i:04d}.png", bgr["prompt"])
    return root


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def training_rate(run: Path, world: int) -> float:
    """Median training pairs/s per process over the logged rows after the first fifth."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["pairs_per_s"] for r in rows if "pairs_per_s" in r]
    return statistics.median(rates[len(rates) // 5 :]) / world


def train_args(c: Check, run: Path, steps: int, *extra: str) -> list[str]:
    model = ["--recipe", "paper"] if c.paper else ["--fusion", "cat"]
    return torchrun(
        c.gpus,
        "train",
        *model,
        "--train",
        str(c.out / "train"),
        "--val",
        str(c.out / "heldout"),
        "--out",
        str(run),
        "--encoder-weights",
        "none",
        "--size",
        str(c.size),
        "--steps",
        str(steps),
        "--global-batch-size",
        str(c.batch),
        "--workers",
        str(c.workers),
        "--val-pairs",
        "8",
        "--val-every",
        str(max(steps // 2, 1)),
        "--save-every",
        str(steps),
        "--log-every",
        str(max(steps // 20, 1)),
        "--device",
        c.device,
        "--no-progress",
        *extra,
    )


def data_steps(c: Check, tiny: bool) -> None:
    c.run(
        "generate",
        cli(
            "generate",
            "--source",
            "builtin",
            "--builtin-split",
            "train",
            "--num-pairs",
            str(c.pairs),
            "--size",
            str(c.size),
            "--shard-size",
            str(max(c.pairs // 8, 4)),
            "--workers",
            str(min(8, os.cpu_count() or 1)),
            "--out",
            str(c.out / "train"),
            "--no-progress",
            "-q",
        ),
    )
    c.run(
        "generate held-out",
        cli(
            "generate",
            "--source",
            "builtin",
            "--builtin-split",
            "heldout",
            "--num-pairs",
            str(8 if tiny else 128),
            "--size",
            str(c.size),
            "--change-weights",
            "disappear=1,appear=1,exchange=1,local=1,none=1",
            "--out",
            str(c.out / "heldout"),
            "--no-progress",
            "-q",
        ),
    )


def training_steps(c: Check, env: dict) -> float:
    """DDP training, its resume and (CUDA) an fp16 run; returns pairs/s per process."""
    run = c.out / "run"
    c.run("DDP train" + ("" if c.device == "cpu" else " (AMP, device augmentation)"), train_args(c, run, c.steps), env)
    rate = training_rate(run, c.gpus)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    c.note(
        f"{c.steps} steps, {c.gpus} processes, {rate:.1f} pairs/s per process, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    c.run("resume", train_args(c, run, c.steps + max(1, c.steps // 10), "--resume"), env)
    if c.device != "cpu":
        c.run("fp16 train (grad scaler)", train_args(c, c.out / "run-fp16", 30, "--amp", "fp16"), env)
    return rate


def bench_steps(c: Check, rate: float, tiny: bool) -> str:
    """bench train (fed the measured step rate) and bench model; returns bench train's table."""
    bench = c.run(
        "bench train",
        cli(
            "bench",
            "train",
            "--shards",
            str(c.out / "train"),
            "--size",
            str(c.size),
            "--batch-size",
            str(c.batch // c.gpus),
            "--pairs",
            str(4 * c.batch // c.gpus),
            "--batches",
            "2" if tiny else "8",
            "--device",
            c.device,
            "--gpu-pairs-s",
            f"{max(rate, 1e-3):.3f}",
            "--cores",
            "8,16,32,64",
        ),
    )
    row = next((line.split("|") for line in bench.splitlines() if line.startswith("| device |")), None)
    c.note(
        f"loader, device augmentation: {row[2].strip()} pairs/s per core, {row[3].strip()} of the decode floor"
        if row
        else ""
    )
    model = c.run(
        "bench model",
        cli(
            "bench",
            "model",
            "--device",
            c.device,
            "--size",
            str(c.size),
            "--pairs",
            "1" if tiny else "8",
            "--repeats",
            "1" if tiny else "3",
            *(["--no-paper"] if tiny else []),
        ),
    )
    speed = [line for line in model.splitlines() if line.startswith("| default")]
    c.note(f"lite0: {speed[0].split('|')[7].strip()} pairs/s" if speed else "")
    return bench


def evaluate_step(c: Check, tiny: bool) -> None:
    bench_set = mvtec_from_pairs(c.out / "heldout", c.out / "eval-set")
    c.run(
        "evaluate",
        cli(
            "evaluate",
            "--checkpoint",
            str(c.out / "run" / "last.pt"),
            "--data",
            str(bench_set),
            "--format",
            "mvtec",
            "--method",
            "both",
            "--seeds",
            "1" if tiny else "1,3",
            "--device",
            c.device,
            "--overlays",
            "1",
            "--out",
            str(c.out / "eval"),
            "-q",
        ),
    )
    result = json.loads((c.out / "eval" / "metrics.json").read_text())
    mean = next(r for r in result["rows"] if r["class"] == "mean" and r["method"] == "model")
    c.note(f"model P-AUROC {mean['metrics']['P-AUROC']:.3f}, I-AUROC {mean['metrics']['I-AUROC']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="the CPU form: gloo, no CUDA needed")
    p.add_argument("--tiny", action="store_true", help="toy sizes (64 px, a few steps): the test suite's run")
    p.add_argument("--gpus", type=int, default=2, help="processes for DDP (at most the GPUs there are)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 300, tiny 3)")
    p.add_argument(
        "--model",
        choices=("paper", "lite"),
        default=None,
        help="train the paper's b4 (--recipe paper) or the default lite0 (default: paper, tiny: lite)",
    )
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    a = p.parse_args(argv)

    import torch

    if not a.cpu and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
            "run with --cpu for the CPU form",
            file=sys.stderr,
        )
        return 1
    gpus = min(a.gpus, 2 if a.cpu else torch.cuda.device_count())
    c = Check(
        device="cpu" if a.cpu else "cuda",
        gpus=gpus,
        out=a.out,
        size=64 if a.tiny else 256,
        steps=a.steps or (3 if a.tiny else 300),
        batch=(4 if a.tiny else 32) * gpus,
        pairs=48 if a.tiny else 2048,
        workers=0 if a.tiny else min(6, max(1, (os.cpu_count() or 2) // gpus - 1)),
        paper=(a.model or ("lite" if a.tiny else "paper")) == "paper",
    )
    header = (
        f"torch {torch.__version__}, "
        + (
            f"CUDA {torch.version.cuda}, {gpus} x {torch.cuda.get_device_name(0)}"
            if not a.cpu
            else f"CPU form, {gpus} gloo processes"
        )
        + f", {os.cpu_count()} cores"
    )
    print(f"[gpu_check] {header}", file=sys.stderr)
    data_steps(c, a.tiny)
    rate = training_steps(c, {"OMP_NUM_THREADS": "1"} if a.cpu else {})
    bench = bench_steps(c, rate, a.tiny)
    evaluate_step(c, a.tiny)
    print(f"\n{header}")
    c.table()
    print(f"\n{bench}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
