"""Evaluation-side options of the DictAS/FDSL issue: the `mix` method, joint K-shot, and
test-time prompt rotations."""

from __future__ import annotations

import json

import pytest
import torch

from metauas.cli import main
from metauas.errors import UserError
from metauas.evaluation.config import EvalConfig
from metauas.inference.lookup import LookupConfig
from metauas.inference.policy import PromptPolicy
from metauas.inference.prompts import prompt_features
from metauas.inference.scoring import Scorer
from metauas.model.checkpoint import load_model


def _scorer(checkpoint, methods, **kw) -> Scorer:
    model, _ = load_model(checkpoint)
    return Scorer(model.encoder, model, methods, lookup=LookupConfig(sigma=0), **kw)


def test_mix_is_the_weighted_geometric_mean_of_the_model_and_lookup_maps(checkpoint):
    torch.manual_seed(0)
    prompt, query = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    scorer = _scorer(checkpoint, ("model", "lookup", "mix"), mix_weight=0.25)
    maps = scorer.maps([scorer.features(prompt)], scorer.features(query), (64, 64))
    assert torch.allclose(maps["mix"], maps["model"] ** 0.75 * maps["lookup"] ** 0.25)
    ends = {}
    for w in (0.0, 1.0):  # the two ends are the model's and the lookup's own maps
        s = _scorer(checkpoint, ("model", "lookup", "mix"), mix_weight=w)
        ends[w] = s.maps([s.features(prompt)], s.features(query), (64, 64))
    assert torch.equal(ends[0.0]["mix"], ends[0.0]["model"]) and torch.equal(ends[1.0]["mix"], ends[1.0]["lookup"])
    alone = _scorer(checkpoint, ("mix",), mix_weight=0.25)  # mix alone computes its inputs itself
    again = alone.maps([alone.features(prompt)], alone.features(query), (64, 64))
    assert list(again) == ["mix"] and torch.allclose(again["mix"], maps["mix"], atol=1e-6)
    assert alone.efficiency(64)["mix"]["parameters"]["learnable"] > 0
    with pytest.raises(UserError, match="`mix_weight`"):
        _scorer(checkpoint, ("mix",), mix_weight=1.5)


def test_joint_shot_fusion_of_identical_prompts_equals_one_shot(checkpoint):
    torch.manual_seed(1)
    prompt, query = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    one = _scorer(checkpoint, ("model",))
    joint = _scorer(checkpoint, ("model",), shot_fusion="joint")
    q = one.features(query)
    single = one.maps([one.features(prompt)], q, (64, 64))["model"]
    double = joint.maps([joint.features(prompt)] * 2, q, (64, 64))["model"]
    assert torch.allclose(single, double, atol=1e-5)


def test_prompt_rotations_add_exactly_rotated_shots(checkpoint, mvtec_root):
    from metauas.inference.scoring import load_tensor

    scorer = _scorer(checkpoint, ("lookup",))
    path = mvtec_root / "tile" / "train" / "good" / "000.png"
    shots = prompt_features(scorer, [[path]], lambda p: load_tensor(p, 64), {}, PromptPolicy(rotations=(0, 90)))
    assert len(shots) == 2
    rotated = scorer.features(torch.rot90(load_tensor(path, 64)[None], 1, dims=(2, 3)))
    assert all(torch.equal(a, b) for a, b in zip(shots[1], rotated))
    with pytest.raises(UserError, match="multiples of 90"):
        EvalConfig(data=mvtec_root, prompt_rotations=(0, 45))


def test_evaluate_all_methods_with_rotations_end_to_end(mvtec_root, checkpoint, tmp_path, capsys):
    out = tmp_path / "all"
    code = main(
        [
            "evaluate",
            "--data",
            str(mvtec_root),
            "--checkpoint",
            str(checkpoint),
            "--method",
            "all",
            "--classes",
            "tile",
            "--seeds",
            "1",
            "--shots",
            "2",
            "--shot-fusion",
            "joint",
            "--prompt-rotations",
            "0,180",
            "--mix-weight",
            "0.3",
            "--overlays",
            "1",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in result["rows"]} == {"model", "lookup", "mix"}
    md = (out / "metrics.md").read_text()
    assert "prompt rotations [0, 180] (joint)" in md and "mix weight 0.3" in md
    assert main(["evaluate", "--data", str(mvtec_root), "--method", "mix", "--out", str(tmp_path / "x")]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err


def test_scorer_reports_the_trained_models_parameters_not_the_folded_ones(checkpoint):
    from metauas.inference.scoring import build_scorer

    scorer, meta = build_scorer(checkpoint, ("model", "lookup"), "features", LookupConfig(), torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.model.decoder.modules())  # prepared
    assert scorer.efficiency(64)["model"]["parameters"] == meta["parameters"]
    assert meta["parameters"]["learnable"] > 0
