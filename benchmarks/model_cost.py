"""Inference cost of model variants and the lookup: ms per 256-px image on this machine, and
each variant's ratio to the model without discrepancy channels, measured in one run.

    python benchmarks/model_cost.py --size 256 --repeats 5
    python benchmarks/model_cost.py --search-blocks 4096x16384,1024x512 --repeats 5

Each variant is the inference path predict and evaluate use (`prepare_for_inference`:
BatchNorm folded, channels_last), one prompt and one query per call (batch 1), prompt
encoded with the query as `MetaUAS.predict` does. Variants are timed in turns (A B C A B
C ...) and the fastest call of each is kept, so drift on a shared machine hits all of them
alike and the ratios hold where absolute times do not. Weights are random: time does not
depend on their values.

`--prompt-rotations 0,90,180,270 --checkpoint RUN/last.pt` times the product's path
instead (`metauas.load(...).segment`, the prompt's features cached as predict caches
them): model, lookup and mix with the prompt seen once and seen under each rotation (as
more shots, `set_prompts(..., rotations=...)`), each against its own one-view time.

`--search-blocks QxP,...` times the nearest-prompt search alone (`best_similarity`, the
stage-0 discrepancy of a 256-px image: 16384 x 16384 positions, 16 channels) with each
block shape of query x prompt positions, and checks every shape gives the same result.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

import torch

from metauas.inference.bench import interleaved_best
from metauas.inference.config import SHARED_ENCODER, LookupConfig
from metauas.inference.lookup import lookup_map
from metauas.inference.prepared import prepare_for_inference
from metauas.inference.scoring import Scorer, scoring_encoder
from metauas.model.config import EncoderConfig, ModelConfig
from metauas.model.network import MetaUAS

VARIANTS = {
    "no discrepancy": {"discrepancy_stages": ()},
    "discrepancy 1,2,3": {"discrepancy_stages": (1, 2, 3)},
    "discrepancy 0,1,2,3": {"discrepancy_stages": (0, 1, 2, 3)},
}


def build(encoder: str, fields: dict) -> MetaUAS:
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(), encoder=EncoderConfig(name=encoder), **fields)
    return prepare_for_inference(MetaUAS(cfg))


def mixed(scorer: Scorer, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """`mix` as predict runs it, prompt and query encoded in one batch (as `MetaUAS.predict`)."""
    feats = scorer.features(torch.cat([prompt, query]))
    return scorer.maps([[f[:1] for f in feats]], [f[1:] for f in feats], tuple(query.shape[-2:]))["mix"]


def search_blocks(shapes: str, repeats: int) -> None:
    from metauas.model.network import best_similarity

    torch.manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(1, 16384, 16), dim=-1)
    keys = torch.nn.functional.normalize(torch.randn(1, 16, 16384), dim=1)
    fns = {shape: partial(best_similarity, queries, keys, *map(int, shape.split("x"))) for shape in shapes.split(",")}
    best, results = interleaved_best(fns, repeats)
    first = next(iter(results.values()))
    print("| query x prompt block | ms | same result |\n|---|---|---|")
    for shape, seconds in best.items():
        print(f"| {shape} | {1000 * seconds:.0f} | {torch.equal(results[shape], first)} |")


def rotation_cost(checkpoint: str, size: int, rotations: tuple[int, ...], repeats: int) -> None:
    import numpy as np

    import metauas

    rng = np.random.default_rng(0)
    prompt, query = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2))
    fns = {}
    for method in ("model", "lookup", "mix"):
        for views in ((0,), rotations):
            seg = metauas.load(checkpoint if method != "lookup" else None, method=method, size=size, device="cpu")
            seg.set_prompts(prompt, rotations=views)
            fns[(method, views)] = (lambda s: lambda: s.segment(query))(seg)
    best, _ = interleaved_best(fns, repeats)
    print(f"| method ({size} px, batch 1) | prompt views | ms per image | vs one view |\n|---|---|---|---|")
    for (method, views), seconds in best.items():
        ratio = seconds / best[(method, (0,))]
        print(f"| {method} | {','.join(map(str, views))} | {1000 * seconds:.0f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encoders", default="tf_efficientnet_lite0", help="Comma-separated timm encoder names.")
    parser.add_argument("--search-blocks", help="Time the stage-0 search alone with these QxP block shapes.")
    parser.add_argument(
        "--prompt-rotations", help="Time predict's path with the prompt also rotated, e.g. 0,90,180,270."
    )
    parser.add_argument("--checkpoint", help="The trained model --prompt-rotations times.")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.prompt_rotations:
        if not args.checkpoint:
            parser.error("--prompt-rotations needs --checkpoint")
        rotations = tuple(int(r) for r in args.prompt_rotations.split(","))
        return rotation_cost(args.checkpoint, args.size, rotations, args.repeats)
    if args.search_blocks:
        return search_blocks(args.search_blocks, args.repeats)
    prompt, query = torch.rand(1, 3, args.size, args.size), torch.rand(1, 3, args.size, args.size)
    fns = {}
    for encoder in args.encoders.split(","):
        models = {name: build(encoder, fields) for name, fields in VARIANTS.items()}
        for name, model in models.items():
            fns[f"{encoder} model, {name}"] = (lambda m: lambda: m.predict(prompt, query))(model)
        default = models["discrepancy 0,1,2,3"]
        shared = LookupConfig(encoder=SHARED_ENCODER)
        fns[f"{encoder} lookup on the model's encoder"] = (lambda e: lambda: lookup_map(e, prompt, query, shared))(
            default.encoder
        )
        blends = [
            ("default model", default, "the lookup on the model's encoder", shared),
            ("default model", default, "default lookup", LookupConfig()),
            ("discrepancy 1,2,3 model", models["discrepancy 1,2,3"], "default lookup", LookupConfig()),
        ]
        for model_label, blended, label, cfg in blends:
            scorer = Scorer(scoring_encoder(("mix",), cfg, blended), blended, ("mix",), lookup=cfg)
            fns[f"{encoder} mix, {model_label} + {label}"] = partial(mixed, scorer, prompt, query)
        lookup = scoring_encoder(("lookup",), LookupConfig(), None)
        fns[f"{encoder} lookup (default: {LookupConfig().encoder})"] = (
            lambda e: lambda: lookup_map(e, prompt, query, LookupConfig())
        )(lookup)
    best, _ = interleaved_best(fns, args.repeats)
    print(f"| variant ({args.size} px, batch 1) | ms per image | vs no discrepancy |\n|---|---|---|")
    for name, seconds in best.items():
        base = best[f"{name.split(' ')[0]} model, no discrepancy"]
        print(f"| {name} | {1000 * seconds:.0f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
