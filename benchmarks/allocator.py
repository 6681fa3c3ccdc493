"""What `keep_freed_buffers` (metauas/inference/prepared.py) buys batched CPU inference.

    python benchmarks/allocator.py [--rounds 3] [--pairs 4] [--size 256] [--calls 6]

glibc's allocator setting is process-wide and cannot be undone inside a process, so each
measurement is a fresh child process: one with glibc's defaults, one after
`keep_freed_buffers()`, taking turns (default, kept, default, kept, ...) so both see the
same machine drift. Each child builds the default model (random weights, same compute),
folds and converts it as `prepare_for_inference` does (without the allocator call), and
times `predict` on a batch; the median of its calls after the first counts. Prints both
medians in ms per pair and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def child(keep: bool, pairs: int, size: int, calls: int) -> float:
    """Median ms per pair of `predict` in this process (allocator set first if `keep`)."""
    if keep:
        from metauas.inference.prepared import keep_freed_buffers

        if not keep_freed_buffers():
            raise SystemExit("keep_freed_buffers() did not take effect here (not Linux glibc?)")
    import torch

    from metauas.inference.prepared import fold_batchnorm
    from metauas.model.config import EncoderConfig, ModelConfig
    from metauas.model.network import MetaUAS

    torch.manual_seed(0)
    model = MetaUAS(ModelConfig(encoder=EncoderConfig(weights="none"))).eval()
    fold_batchnorm(model.decoder)
    model.to(memory_format=torch.channels_last)
    prompts, queries = torch.rand(pairs, 3, size, size), torch.rand(pairs, 3, size, size)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict(prompts, queries)
        times.append(1000 * (time.perf_counter() - start) / pairs)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="child processes per setting")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per predict batch")
    parser.add_argument("--size", type=int, default=256, help="input side in px")
    parser.add_argument("--calls", type=int, default=6, help="predict calls per child (first is warm-up)")
    parser.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child == "kept", args.pairs, args.size, args.calls))
        return
    results: dict[str, list[float]] = {"default": [], "kept": []}
    for _ in range(args.rounds):
        for setting in results:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                setting,
                "--pairs",
                str(args.pairs),
                "--size",
                str(args.size),
                "--calls",
                str(args.calls),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[setting].append(float(out.strip().splitlines()[-1]))
    default, kept = (statistics.median(v) for v in results.values())
    print(f"predict, {args.pairs} pairs x {args.size} px, ms per pair (median of {args.rounds} processes):")
    print(f"glibc defaults {default:.1f}   keep_freed_buffers {kept:.1f}   ratio {default / kept:.2f}x")
    print("per process:", {k: [round(x, 1) for x in v] for k, v in results.items()})


if __name__ == "__main__":
    main()
