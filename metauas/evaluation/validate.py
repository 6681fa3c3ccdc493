"""Scoring a model that is still training on real defects (`train --val DIR`).

Synthetic held-out pairs say whether the model learned its training task; only real
defects say whether it transfers (docs/quality.md). This runs the exact protocol of
`metauas evaluate --method model` (random 1-shot prompts per seed, the same reader,
maps and metrics) on the live model, so a run's learning curve on an MVTec-layout
folder is measured, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metauas.evaluation.config import EvalConfig
from metauas.evaluation.evaluate import score_class
from metauas.evaluation.metrics import compute_metrics
from metauas.evaluation.readers import ClassData, read_benchmark
from metauas.inference.prompts import random_prompts
from metauas.inference.scoring import Scorer

LOGGED = {"I-AUROC": "i_auroc", "P-AUROC": "p_auroc", "P-AP": "p_ap", "P-AUPRO": "p_aupro"}


class RealValidator:
    """The classes of some MVTec-layout folders, with their prompts drawn once per seed."""

    def __init__(self, roots: Sequence[str | Path], size: int, seeds: tuple[int, ...]) -> None:
        self.classes: list[ClassData] = [c for root in roots for c in read_benchmark(root, "mvtec").classes]
        self.cfg = EvalConfig(data=Path(roots[0]), method="model", seeds=seeds, size=size, overlays=0,
                              fit_normals=0, progress=False)
        self.prompts = {(seed, c.name): random_prompts(c.train, 1, seed, c.name) for seed in seeds
                        for c in self.classes}

    def __len__(self) -> int:
        return sum(len(c.test) for c in self.classes)

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """real_<metric> (mean over classes and seeds) and real_<class>_p_ap, as fractions."""
        was_training = model.training
        model.eval()
        scorer = Scorer(model.encoder, model, ("model",), device=device)
        per_class: dict[str, list[dict[str, float]]] = {c.name: [] for c in self.classes}
        for seed in self.cfg.seeds:
            for data in self.classes:
                cm = score_class(self.cfg, scorer, data, self.cfg.size, self.prompts[seed, data.name], None, [])
                labels = [s.label for s in cm.samples]
                per_class[data.name].append(compute_metrics(cm.maps["model"], cm.masks, labels, self.cfg.metric))
        model.train(was_training)
        row = {f"real_{key}": float(np.nanmean([m[name] for runs in per_class.values() for m in runs]))
               for name, key in LOGGED.items()}
        row |= {f"real_{name}_p_ap": float(np.mean([m["P-AP"] for m in runs])) for name, runs in per_class.items()}
        return row
