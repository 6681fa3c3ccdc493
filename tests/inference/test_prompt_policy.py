"""One prompt policy (`inference.policy`) behind `evaluate`, `train --val` folders and the
Python API: on the same prompts the three give equal maps, so they cannot drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metauas
from metauas.errors import UserError
from metauas.evaluation.config import EvalConfig
from metauas.evaluation.evaluate import class_bank, prompt_plan, score_class
from metauas.evaluation.readers import read_benchmark
from metauas.inference.config import LookupConfig
from metauas.inference.policy import PromptPolicy
from metauas.inference.scoring import build_scorer

CPU = torch.device("cpu")


def _evaluate_maps(cfg: EvalConfig, classes, scorer):
    """(run label, class) -> (the class's maps, the prompts each query took), as evaluate scores them."""
    out, pools = {}, {}
    for run, fixed in prompt_plan(cfg, classes).items():
        for data in classes:
            cm = score_class(
                cfg, scorer, data, 64, class_bank(run, fixed[data.name], data, classes, 64, scorer, pools), []
            )
            out[run.label, data.name] = cm
    return out


@pytest.mark.parametrize(
    "options",
    [
        {"prompt_mode": "random", "seeds": (3,)},  # one random prompt per class
        {"prompt_mode": "random", "seeds": (5,), "shots": 2, "prompt_rotations": (0, 90)},  # K-shot, rotations
        {"prompt_mode": "best"},  # each query its closest normal image
    ],
)
def test_evaluate_and_the_api_give_equal_maps_on_the_same_prompts(checkpoint, mvtec_root, options):
    cfg = EvalConfig(data=mvtec_root, checkpoint=checkpoint, method="model", size=64, progress=False, **options)
    classes = read_benchmark(mvtec_root, "mvtec").classes
    scorer, _ = build_scorer(checkpoint, ("model",), "features", LookupConfig(), CPU)
    model = metauas.load(checkpoint, method="model", device="cpu", size=64)
    for (label, name), cm in _evaluate_maps(cfg, classes, scorer).items():
        data = next(c for c in classes if c.name == name)
        if cfg.prompt_mode == "best":  # the API chooses among the same candidates
            model.set_prompts(*data.train)
            candidates = data.train
        else:
            candidates = cm.prompts[0]
            model.set_prompts(*candidates, use_all=True, rotations=cfg.prompt_rotations)
        results = model.segment([s.path for s in cm.samples])
        assert [[candidates[i] for i in r.prompts] for r in results] == cm.prompts
        for r, expected in zip(results, cm.maps["model"]):
            assert np.abs(r.map - expected).max() < 1e-5, (label, name)


def test_training_validation_gives_evaluates_maps(checkpoint, mvtec_root):
    from metauas.model.checkpoint import load_model
    from metauas.trainer.validation import RealValidator

    classes = read_benchmark(mvtec_root, "mvtec").classes
    cfg = EvalConfig(data=mvtec_root, checkpoint=checkpoint, method="model", seeds=(1, 2), size=64, progress=False)
    scorer, _ = build_scorer(checkpoint, ("model",), "features", LookupConfig(), CPU)
    expected = _evaluate_maps(cfg, classes, scorer)
    model, _ = load_model(checkpoint, map_location="cpu")
    validated = {
        (label, name): cm for label, name, cm in RealValidator([mvtec_root], 64, (1, 2)).maps(model.eval(), CPU)
    }
    assert validated.keys() == expected.keys()
    for key, cm in validated.items():
        assert cm.prompts == expected[key].prompts
        for a, b in zip(cm.maps["model"], expected[key].maps["model"]):
            assert np.abs(a - b).max() < 1e-5, key


def test_a_policy_chooses_the_closest_all_or_leaves_one_out():
    vectors = np.eye(3, dtype=np.float32)
    closest = PromptPolicy("best", shots=2).choose(2, 3, lambda allowed: (vectors[[2, 0]], vectors[allowed] + 0.1))
    assert closest == [(2, 0), (0, 1)]
    assert PromptPolicy("all").choose(2, 3, exclude=1) == [(0, 2), (0, 2)]
    assert PromptPolicy("best").choose(1, 3, lambda allowed: (vectors[[1]], vectors[allowed]), exclude=1) in (
        [(0,)],
        [(2,)],
    )
    with pytest.raises(UserError, match="2 prompt candidate"):
        PromptPolicy("pool", seed=1, shots=3).choose(1, 2, lambda allowed: (vectors, vectors))
    assert [p.label for p in (PromptPolicy("random", 3), PromptPolicy("pool", 3), PromptPolicy("best"))] == [
        "seed3",
        "pool-seed3",
        "best",
    ]
