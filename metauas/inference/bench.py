"""`metauas bench model`: where inference time goes, and what batching and sharing buy.

For one model configuration, measured in one run on the same weights:
- the time split of one batch of pairs: encoder / alignment (projection, similarity,
  fusion) / decoder (+ head);
- inference pairs/s of `MetaUAS.predict` on the model `prepare_for_inference` makes (prompt
  and query in one batched encoder call, inference_mode, decoder BatchNorm folded,
  channels_last, optionally torch.compile) against a naive reference of the same weights
  that calls the encoder once per image, pair by pair, with autograd on and the default
  memory format;
- the same with many queries sharing one prompt (features computed once vs per query);
- the largest difference between the two paths' probabilities (must stay below 1e-4).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from metauas.inference.prepared import prepare_for_inference
from metauas.model.config import ModelConfig
from metauas.model.network import MetaUAS


@dataclass(frozen=True)
class ModelBenchResult:
    name: str
    total_params: int
    learnable_params: int
    encoder_ms: float  # per pair (two images)
    alignment_ms: float
    decoder_ms: float
    reference_pairs_s: float
    fast_pairs_s: float
    reference_shared_pairs_s: float
    fast_shared_pairs_s: float
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.fast_pairs_s / self.reference_pairs_s

    @property
    def shared_speedup(self) -> float:
        return self.fast_shared_pairs_s / self.reference_shared_pairs_s


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up (the least disturbed run)."""
    return _interleaved_best({"fn": fn}, repeats)[0]["fn"]


def _interleaved_best(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Fastest of `repeats` calls of each function, taking turns (A B C A B C ...), and
    each function's warm-up result.

    On a shared machine the speed drifts over seconds; timing the paths in turn exposes
    each to the same drift, so their ratio holds where back-to-back blocks would not."""
    results = {name: fn() for name, fn in fns.items()}  # warm-up: allocator, oneDNN, compilation
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, results


def reference_predict(model: MetaUAS, prompts: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The naive path: encoder per image, pair by pair, autograd on, prompts recomputed."""
    out = []
    for prompt, query in zip(prompts, queries):
        pf = model.encoder(prompt[None])
        qf = model.encoder(query[None])
        out.append(torch.sigmoid(model.segment(pf, qf, size=query.shape[-2:])))
    return torch.cat(out).detach()


def shared_predict(model: MetaUAS, prompt: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Many queries, one prompt: the prompt's features are computed once and broadcast."""
    with torch.inference_mode():
        feats = model.encode(prompt[None])
        return torch.sigmoid(model.segment(feats, model.encode(queries), size=queries.shape[-2:]))


def _synced(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """`fn` that returns only when a CUDA device has finished its work (kernels are async)."""
    if device.type != "cuda":
        return fn

    def synced() -> Any:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return synced


def time_split(model: MetaUAS, prompts: torch.Tensor, queries: torch.Tensor, repeats: int):
    """Seconds per batch spent in the encoder, the alignment+fusion, and the decoder+head."""
    device = prompts.device
    with torch.inference_mode():
        pf, qf = model.encode_pair(prompts, queries)
        fused = model.fused_stages(pf, qf)
        size = queries.shape[-2:]
        enc = _best_of(_synced(lambda: model.encode_pair(prompts, queries), device), repeats)
        ali = _best_of(_synced(lambda: model.fused_stages(pf, qf), device), repeats)
        dec = _best_of(_synced(lambda: model.head(model.decoder(fused, size)), device), repeats)
    return enc, ali, dec


def bench_model(
    name: str,
    cfg: ModelConfig,
    size: int = 256,
    pairs: int = 4,
    repeats: int = 2,
    compile: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> ModelBenchResult:
    """Time split of the prepared model, and both paths' pairs/s, in one run, on `device`."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = MetaUAS(cfg).eval().to(dev)
    prompts, queries = torch.rand(pairs, 3, size, size, device=dev), torch.rand(pairs, 3, size, size, device=dev)
    shared_prompts = prompts[:1].expand_as(queries)

    fast_model = prepare_for_inference(copy.deepcopy(model), compile=compile)
    enc, ali, dec = time_split(fast_model, prompts, queries, repeats)
    paths = {
        name: _synced(fn, dev)
        for name, fn in {
            "reference": lambda: reference_predict(model, prompts, queries),
            "shared_reference": lambda: reference_predict(model, shared_prompts, queries),
            "fast": lambda: fast_model.predict(prompts, queries),
            "shared": lambda: shared_predict(fast_model, prompts[0], queries),
        }.items()
    }
    seconds, out = _interleaved_best(paths, repeats)
    ref_s, ref_shared_s = seconds["reference"], seconds["shared_reference"]
    fast_s, fast_shared_s = seconds["fast"], seconds["shared"]
    reference, shared_reference, fast, shared = (out[k] for k in paths)

    diff = max((fast - reference).abs().max().item(), (shared - shared_reference).abs().max().item())
    counts = model.parameter_counts()
    return ModelBenchResult(
        name=name,
        total_params=counts["total"],
        learnable_params=counts["learnable"],
        encoder_ms=1000 * enc / pairs,
        alignment_ms=1000 * ali / pairs,
        decoder_ms=1000 * dec / pairs,
        reference_pairs_s=pairs / ref_s,
        fast_pairs_s=pairs / fast_s,
        reference_shared_pairs_s=pairs / ref_shared_s,
        fast_shared_pairs_s=pairs / fast_shared_s,
        max_abs_diff=diff,
    )
