"""Does a method's image score depend on the resolution a query file is stored at?

    python benchmarks/scale_spread.py --checkpoint RUN/last.pt --data ../shared/data/glass-dev \\
        --size 256 --out SPREAD/glass.json

For each class of each MVTec-layout folder, one normal training image (drawn by prompt
`--seed`, as `evaluate`'s random 1-shot prompts) is the prompt at its own resolution, and
every test image is scored three times: stored at 0.5x (area averaging), 1x and 2x
(cubic interpolation), as a camera at another resolution would store it. The image score
follows the one score rule (docs/api.md: the map's maximum in the model's S x S frame),
so what moves it is the input's own resampling. Printed per class and method (the model,
and the lookup on the same prompt): median, 90th percentile and maximum of each image's
spread (max - min of its three scores), how many images spread by more than 5e-3 (issue
20's bound), and the median spread relative to the std of the class's 1x scores: the
absolute bound favours a method whose scores are compressed (the lookup's span a few
hundredths, the model's most of 0..1), while what a threshold feels is the spread
against the distance between images' scores. `--scale-prompt` stores the prompt at each
factor too (the same camera at another resolution). `--mix 0.9` adds the `mix` method at
that lookup weight (comma-separated for several). `--frame-blur SIGMA` is a what-if, not the product: every input
(prompt and query, both methods) gets a Gaussian low-pass of SIGMA px in the model's
frame after the resize, which removes the rendering differences that resampling leaves
at the finest scale. `--score-topk K` is another: the image score is the mean of the
map's K highest pixels in the frame (`evaluate --image-score topk --score-topk K`).
`--decisions` also fits each method's threshold as `predict --threshold auto` does (the
maximum score of the class's other normal training images, at 1x) and counts the test
images whose decision changes between the stored resolutions: the change a user of the
fitted threshold sees. `--model-floor E` and `--model-blur SIGMA` are what-ifs on the
mix rows (as `fusion.py`'s): the model's map becomes (m + E) / (1 + E), or is
low-passed by SIGMA px, before the blend. `--noise SIGMA` adds a fourth rendering: the 1x
file as a second shot of the same scene (Gaussian sensor noise of SIGMA grey levels at the
file's resolution, stored as whole grey levels; the same noise for every method), so the
spread also says how far a grey level of camera noise moves the score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

BOUND = 5e-3


def stored_at(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The image as a file at `factor` times its resolution would hold it."""
    if factor == 1:
        return rgb
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=interpolation)


def shot_again(rgb: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """The image as a second shot of the same scene holds it: Gaussian sensor noise of
    `noise` grey levels at the file's resolution, stored as whole grey levels."""
    noisy = rgb + np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def class_spreads(
    segmenter, prompt: np.ndarray, queries: list[np.ndarray], factors, scale_prompt: bool, noise: float = 0.0
):
    """Each query's scores at each factor (then, with `noise`, at 1x as a second shot):
    an images x renderings array."""
    scores = np.zeros((len(queries), len(factors) + (noise > 0)))
    segmenter.set_prompts(prompt)
    for j, f in enumerate(factors):
        if scale_prompt:
            segmenter.set_prompts(stored_at(prompt, f))
        results = segmenter.segment([stored_at(q, f) for q in queries])
        scores[:, j] = [r.score for r in results]
    if noise > 0:
        if scale_prompt:  # the second shot is compared with the 1x prompt
            segmenter.set_prompts(prompt)
        results = segmenter.segment([shot_again(q, noise, i) for i, q in enumerate(queries)])
        scores[:, -1] = [r.score for r in results]
    return scores


def summary(scores: np.ndarray, factors: list[float], threshold: float | None = None) -> dict:
    spread = scores.max(axis=1) - scores.min(axis=1)
    decisions = {}
    if threshold is not None:  # what a user feels: does the decision change with the file?
        anomalous = scores > threshold
        decisions = {"threshold": threshold, "flips": int((anomalous.any(axis=1) != anomalous.all(axis=1)).sum())}
    at_1x = scores[:, factors.index(1.0)] if 1.0 in factors else scores[:, 0]
    return {
        "images": len(spread),
        "median": float(np.median(spread)),
        "p90": float(np.quantile(spread, 0.9)),
        "max": float(spread.max()),
        "above_bound": int((spread > BOUND).sum()),
        "relative": float(np.median(spread) / max(float(at_1x.std()), 1e-12)),
        **decisions,
    }


def blur_the_frame(sigma: float) -> None:
    """Make every image the API and `evaluate` score pass a Gaussian low-pass of `sigma`
    px in the frame (what-if; `quality.py --frame-blur` uses it too)."""
    import metauas.inference.api as api
    import metauas.inference.scoring as scoring
    from metauas.inference.frame import model_input

    def blurred(rgb: np.ndarray, size: int) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in model_input(rgb, size)])

    api.model_input = scoring.model_input = blurred


def score_by_topk(k: int) -> None:
    """What-if: the API's image score is the mean of the map's `k` highest pixels in the
    frame (`evaluate --image-score topk`), not its maximum."""
    import metauas.inference.api as api

    api.image_score = lambda m: float(np.sort(np.asarray(m, np.float64).ravel())[-k:].mean())


def change_the_model_side(floor: float, blur: float) -> None:
    """What-if: the `mix` method blends the model's map as `fusion.py --model-floor
    --model-blur` changes it (`fusion.model_side`: low-passed by `blur` px, then lifted to
    (m + floor) / (1 + floor))."""
    import dataclasses

    import torch
    from fusion import model_side

    import metauas.inference.scoring as scoring

    blend = scoring.REGISTRY["mix"].compute  # the product's rule, fed the changed model map

    def mix(scorer, prompt_feats, query_feats, size, done):
        maps = done["model"].clamp(min=0).cpu().numpy()
        model = torch.from_numpy(np.stack([[model_side(m[0], floor, blur)] for m in maps]))
        return blend(scorer, prompt_feats, query_feats, size, {**done, "model": model.to(done["lookup"].device)})

    scoring.REGISTRY["mix"] = dataclasses.replace(scoring.REGISTRY["mix"], compute=mix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="A trained model; without it, the lookup only.")
    parser.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout folder, repeatable.")
    parser.add_argument("--size", type=int, default=256, help="The model's frame (evaluation size), px.")
    parser.add_argument("--factors", default="0.5,1,2", help="Comma-separated storage scales of the query.")
    parser.add_argument("--seed", type=int, default=1, help="Prompt seed (evaluate's random 1-shot draw).")
    parser.add_argument("--limit", type=int, default=0, help="Score only the first N test images per class.")
    parser.add_argument("--scale-prompt", action="store_true", help="Store the prompt at each factor too.")
    parser.add_argument("--frame-blur", type=float, default=0.0, help="What-if: low-pass every input (px, frame).")
    parser.add_argument("--score-topk", type=int, default=0, help="What-if: image score = mean of the top K pixels.")
    parser.add_argument("--mix", default="", help="Also the mix method at these comma-separated lookup weights.")
    parser.add_argument("--model-floor", type=float, default=0.0, help="What-if on mix: model map (m + E) / (1 + E).")
    parser.add_argument("--model-blur", type=float, default=0.0, help="What-if on mix: low-pass the model map (px).")
    parser.add_argument("--lookup", default="lookup-default", help="The lookup variant (quality.py's LOOKUPS).")
    parser.add_argument("--lookup-encoder", default="", help="That variant on this encoder (timm name, or `model`).")
    parser.add_argument("--noise", type=float, default=0.0, help="Also a 1x shot with this sensor noise (grey levels).")
    parser.add_argument("--decisions", action="store_true", help="Fit thresholds; count decisions that flip.")
    parser.add_argument("--out", type=Path, help="Write the summary (and every score) as JSON here.")
    args = parser.parse_args()
    if args.model_floor > 0 or args.model_blur > 0:
        change_the_model_side(args.model_floor, args.model_blur)
    if args.frame_blur > 0:
        blur_the_frame(args.frame_blur)
    if args.score_topk > 0:
        score_by_topk(args.score_topk)

    from quality import lookup_variant

    import metauas
    from metauas.data.images import read_image
    from metauas.evaluation.readers import read_benchmark
    from metauas.inference.policy import PromptPolicy

    factors = [float(f) for f in args.factors.split(",")]
    lookup = lookup_variant(args.lookup, args.lookup_encoder)
    methods = {"lookup": metauas.load(method="lookup", size=args.size, device="cpu", lookup=lookup)}
    if args.checkpoint is not None:
        model = metauas.load(args.checkpoint, method="model", size=args.size, device="cpu")
        methods = {"model": model, **methods}
        for w in (float(x) for x in args.mix.split(",") if x):
            methods[f"mix {w:g}"] = metauas.load(
                args.checkpoint, method="mix", mix_weight=w, size=args.size, device="cpu", lookup=lookup
            )
    policy, report = PromptPolicy("random", args.seed, 1), {}
    print(
        "| class | method | images | median | p90 | max | above 5e-3 | median / std of 1x scores |"
        + (" threshold | decisions that change |\n" if args.decisions else "\n")
        + "|---|---|---|---|---|---|---|---|"
        + ("---|---|" if args.decisions else "")
    )
    for data in args.data:
        for c in read_benchmark(data, "mvtec").classes:
            prompt_path = policy.candidates(c.name, c.train)[0]
            prompt = read_image(prompt_path)
            normals = [p for p in c.train if p != prompt_path]
            tests = c.test[: args.limit] if args.limit else c.test
            queries = [read_image(s.path) for s in tests]
            for name, segmenter in methods.items():
                scores = class_spreads(segmenter, prompt, queries, factors, args.scale_prompt, args.noise)
                threshold = None
                if args.decisions:  # against the 1x prompt (`--scale-prompt` left the last factor's)
                    if args.scale_prompt:
                        segmenter.set_prompts(prompt)
                    threshold = segmenter.fit_threshold(normals)
                row = summary(scores, factors, threshold)
                report[f"{data.name}/{c.name}/{name}"] = {**row, "scores": scores.round(6).tolist()}
                print(
                    f"| {data.name}/{c.name} | {name} | {row['images']} | {row['median']:.4f} | {row['p90']:.4f} "
                    f"| {row['max']:.4f} | {row['above_bound']} | {row['relative']:.3f} |"
                    + (f" {row['threshold']:.4f} | {row['flips']} |" if args.decisions else ""),
                    flush=True,
                )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"factors": factors, "noise": args.noise, "size": args.size, "seed": args.seed}
        args.out.write_text(json.dumps({**meta, **report}))


if __name__ == "__main__":
    main()
