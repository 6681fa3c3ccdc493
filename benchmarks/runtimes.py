"""PyTorch eager against the exported graphs (onnxruntime, OpenVINO) through the same API.

    python benchmarks/runtimes.py [--size 256] [--queries 8] [--batch 4] [--rounds 3] [--keep DIR]

One run, one machine: the default model (offline ImageNet lite0 encoder, random decoder:
speed does not depend on the decoder's weights) is saved as a checkpoint and exported
(`metauas export --cached-prompt`, ONNX and OpenVINO; and with `--method mix --mix-weight
0.9`, the model blended with the lookup inside the graph). Each runtime is then timed in its
own fresh process (so its peak memory is its own), taking turns over `--rounds`: load with
`metauas.load`, cache one prompt photograph, segment `--queries` real photographs (a
warm-up pass first), keep the fastest pass. Per runtime: ms per image, the process's peak
resident memory (VmHWM: interpreter, libraries, weights and activations, what a
deployment pays), the speed-up over torch, and the largest score difference from torch
running the same method (the mix rows against torch's mix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIX = 0.9  # the lookup weight of the mix rows (docs/benchmarks.md's table was measured at 0.9)
RUNTIMES = {  # name -> (what metauas.load is given, relative to the export folder; its method)
    "torch eager (prepared)": ("model.pt", "model"),
    "onnxruntime (full graph)": ("full/model.onnx", "model"),
    "onnxruntime (encoder + head)": ("model.onnx", "model"),
    "OpenVINO (encoder + head)": ("model.xml", "model"),
    f"torch eager (prepared), mix {MIX}": ("model.pt", "mix"),
    f"onnxruntime (encoder + head), mix {MIX}": ("mix/model.onnx", "mix"),
}


def photos(n: int) -> list:
    """n real photographs from scikit-image, the first one the prompt."""
    import skimage.data

    names = ["astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "camera", "coins"]
    images = [getattr(skimage.data, name)() for name in names]
    return [images[i % len(images)] for i in range(n + 1)]


def child(source: str, method: str, queries: int, batch: int) -> dict:
    """In a fresh process: ms per image of the fastest pass, peak memory, the scores."""
    import metauas

    images = photos(queries)
    model = metauas.load(source, method=method, mix_weight=MIX, batch_size=batch, device="cpu")
    model.set_prompts(images[0])
    best = float("inf")
    for _ in range(3):  # the first pass warms up (allocations, graph compilation)
        start = time.perf_counter()
        results = model.segment(images[1:])
        best = min(best, time.perf_counter() - start)
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return {"ms": 1000 * best / queries, "peak_mib": peak / 1024, "scores": [r.score for r in results]}


def prepare(folder: Path, size: int) -> None:
    """model.pt, and its exports: model.onnx / model.xml with encoder + head, full/model.onnx
    alone, mix/model.onnx (the mix method, encoder + head)."""
    import torch

    from metauas.cli import main
    from metauas.model.checkpoint import save_checkpoint
    from metauas.model.network import MetaUAS

    if (folder / "mix" / "model.onnx").is_file():
        return
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", MetaUAS(), size=size, step=0)
    for args in (
        ["--out", str(folder / "model.onnx"), "--cached-prompt"],
        ["--out", str(folder / "model.xml"), "--cached-prompt", "--format", "openvino"],
        ["--out", str(folder / "full" / "model.onnx")],
        ["--out", str(folder / "mix" / "model.onnx"), "--cached-prompt", "--method", "mix", "--mix-weight", str(MIX)],
    ):
        if main(["export", "--checkpoint", str(folder / "model.pt"), *args]) != 0:
            raise SystemExit("export failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="export folder to reuse (made when empty)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="metauas-runtimes-"))
    folder.mkdir(parents=True, exist_ok=True)
    prepare(folder, args.size)
    runs: dict[str, list[dict]] = {name: [] for name in RUNTIMES}
    for _ in range(args.rounds):  # taking turns: every runtime sees the same machine drift
        for name, (file, method) in RUNTIMES.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(folder / file), method, str(args.queries), str(args.batch)],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {name: min(r, key=lambda x: x["ms"]) for name, r in runs.items()}
    torch_runs = {m: best[name] for name, (file, m) in RUNTIMES.items() if file == "model.pt"}
    torch_run = torch_runs["model"]
    print(
        f"{args.size} px, {args.queries} photographs per pass in batches of {args.batch}, one cached prompt, "
        f"fastest of {args.rounds} fresh processes each"
    )
    print("| runtime | ms per image | peak memory MiB | speed-up vs torch | max score diff vs torch |")
    print("|---|---|---|---|---|")
    for name, r in best.items():
        same = torch_runs[RUNTIMES[name][1]]
        diff = max(abs(a - b) for a, b in zip(r["scores"], same["scores"]))
        print(f"| {name} | {r['ms']:.1f} | {r['peak_mib']:.0f} | {torch_run['ms'] / r['ms']:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
