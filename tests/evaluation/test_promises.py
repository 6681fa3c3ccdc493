"""What users of evaluate rely on, each against an independent oracle: replaying a run's
prompts gives its metrics exactly; `--prompt-mode best` finds a planted copy of the
query's normal image; images with mask problems are left out of the pixel metrics as if
absent; a class short of --shots normals is left out and named, the others kept."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from metauas.cli import main

LOOKUP = ["--method", "lookup", "--overlays", "0", "--no-progress"]


def _evaluate(capsys, *args) -> dict:
    assert main(["evaluate", *map(str, args)]) == 0, capsys.readouterr().err
    out = args[list(args).index("--out") + 1]
    return json.loads((out / "metrics.json").read_text())


def _per_class(result: dict) -> list:
    return [run for _, run in sorted(result["runs"].items())]


def test_prompts_replay_reproduces_a_runs_metrics_exactly(mvtec_root, checkpoint, tmp_path, capsys):
    first = _evaluate(
        capsys,
        "--data",
        mvtec_root,
        "--checkpoint",
        checkpoint,
        "--method",
        "both",
        "--seeds",
        "1,3",
        "--overlays",
        "0",
        "--out",
        tmp_path / "a",
    )
    replay = _evaluate(
        capsys,
        "--data",
        mvtec_root,
        "--checkpoint",
        checkpoint,
        "--method",
        "both",
        "--prompts",
        tmp_path / "a" / "prompts.json",
        "--overlays",
        "0",
        "--out",
        tmp_path / "b",
    )
    assert sorted(replay["runs"]) == ["file-seed1", "file-seed3"]
    assert _per_class(replay) == _per_class(first)
    assert [r["metrics"] for r in replay["rows"]] == [r["metrics"] for r in first["rows"]]


def test_best_mode_picks_a_planted_copy_of_the_querys_normal(mvtec_root, checkpoint, tmp_path):
    """Each normal test image is also planted among the training normals: the closest
    prompt by the encoder's pooled features must be that very copy."""
    import torch

    from metauas.inference.config import LookupConfig
    from metauas.inference.policy import PromptPolicy
    from metauas.inference.prompts import PromptBank
    from metauas.inference.scoring import build_scorer, to_tensor

    root = tmp_path / "data"
    shutil.copytree(mvtec_root / "tile", root / "tile")
    queries = sorted((root / "tile" / "test" / "good").glob("*.png"))
    for q in queries:
        shutil.copy(q, root / "tile" / "train" / "good" / f"copy-{q.name}")
    scorer, _ = build_scorer(checkpoint, ("model",), "features", LookupConfig(), torch.device("cpu"))
    train = sorted((root / "tile" / "train" / "good").glob("*.png"))
    bank = PromptBank(PromptPolicy("best"), train, 64, scorer)
    feats = scorer.features(
        torch.stack([to_tensor(cv2.cvtColor(cv2.imread(str(q)), cv2.COLOR_BGR2RGB), 64) for q in queries])
    )
    chosen = bank.choose(feats, 8)
    assert [c[0].name for c in chosen] == [f"copy-{q.name}" for q in queries]


def test_images_with_mask_problems_count_as_absent_in_pixel_metrics(mvtec_root, tmp_path, capsys):
    pixel = ("P-AUROC", "P-AP", "P-F1max", "P-AUPRO")
    broken, without = tmp_path / "broken", tmp_path / "without"
    for root in (broken, without):
        shutil.copytree(mvtec_root / "tile", root / "tile")
    gt = broken / "tile" / "ground_truth" / "blob"
    (gt / "000_mask.png").unlink()  # missing
    cv2.imwrite(str(gt / "001_mask.png"), np.zeros((10, 10), np.uint8))  # wrong size
    for name in ("000", "001"):  # the oracle: the same set without those two images
        (without / "tile" / "test" / "blob" / f"{name}.png").unlink()
    a = _evaluate(capsys, "--data", broken, *LOOKUP, "--seeds", "1", "--out", tmp_path / "a")
    b = _evaluate(capsys, "--data", without, *LOOKUP, "--seeds", "1", "--out", tmp_path / "b")
    tile = lambda result: next(r["metrics"] for r in result["rows"] if r["class"] == "tile")  # noqa: E731 - a one-line helper
    assert {m: tile(a)[m] for m in pixel} == {m: tile(b)[m] for m in pixel}
    assert len(a["problems"]) == 2


def test_shots_beyond_a_classs_normals_leave_out_that_class_only(mvtec_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(mvtec_root, root)
    for extra in sorted((root / "plate" / "train" / "good").glob("*.png"))[1:]:
        extra.unlink()  # plate keeps 1 normal image; tile has 3
    result = _evaluate(capsys, "--data", root, *LOOKUP, "--seeds", "1", "--shots", "2", "--out", tmp_path / "o")
    assert {r["class"] for r in result["rows"]} == {"tile", "mean"}
    assert any(p.startswith("class plate left out: 1 normal") for p in result["problems"])
    assert "warning: class plate left out" in capsys.readouterr().err
    assert "class plate left out" in (tmp_path / "o" / "metrics.md").read_text()
