"""Validation during training, in one room: held-out shard pairs and real defect folders.

`--val` names held-out pairs (did the model learn its training task?) and/or
MVTec-layout folders of real defects (does it transfer? docs/quality.md). Pairs give
pixel AUROC / AP and BCE; folders run the exact protocol of `metauas evaluate --method
model` (its prompt plan: random 1-shot prompts per seed; the same reader, maps and metrics) on the live
model, so a run's learning curve on real defects is measured, not guessed. This is the
only trainer module that reaches into `evaluation` and `inference`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metauas.errors import UserError
from metauas.evaluation.config import EvalConfig
from metauas.evaluation.evaluate import ClassMaps, class_bank, prompt_plan, score_class
from metauas.evaluation.metrics import compute_metrics, pixel_auroc_ap
from metauas.evaluation.readers import ClassData, is_benchmark_folder, read_benchmark
from metauas.inference.scoring import Scorer
from metauas.model.network import MetaUAS
from metauas.trainer.config import TrainConfig
from metauas.trainer.stream import resized_pairs, to_float


def val_sources(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(shard specs, MVTec-layout folders) among --val: either kind, or both."""
    entries = [] if cfg.val is None else [cfg.val] if isinstance(cfg.val, str) else list(cfg.val)
    folders = [e for e in entries if is_benchmark_folder(e)]
    return [e for e in entries if e not in folders], folders


class Validator:
    """Pixel AUROC / AP and BCE on held-out pairs, decoded once and kept as uint8."""

    def __init__(self, urls: str | tuple[str, ...], size: int, max_pairs: int) -> None:
        prompts, queries, masks = [], [], []
        for pair in resized_pairs(list(urls) if isinstance(urls, tuple) else urls, size):
            prompts.append((pair["prompt"] * 255).round().to(torch.uint8))
            queries.append((pair["query"] * 255).round().to(torch.uint8))
            masks.append(pair["mask"].to(torch.uint8))
            if len(masks) >= max_pairs:
                break
        if not masks:
            raise UserError(f"no readable validation pairs in {urls}")
        self.prompts, self.queries, self.masks = map(torch.stack, (prompts, queries, masks))

    def __len__(self) -> int:
        return len(self.masks)

    @torch.inference_mode()
    def __call__(self, model: MetaUAS, device: torch.device, batch_size: int) -> dict[str, float]:
        was_training = model.training
        model.eval()
        probs, losses = [], []
        for i in range(0, len(self), batch_size):
            logits = model(
                to_float(self.prompts[i : i + batch_size], device), to_float(self.queries[i : i + batch_size], device)
            ).float()
            target = self.masks[i : i + batch_size].to(device).float()
            losses.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum").item())
            probs.append(torch.sigmoid(logits).cpu())
        model.train(was_training)
        auroc, ap = pixel_auroc_ap(torch.cat(probs), self.masks)
        return {
            "val_p_auroc": auroc,
            "val_p_ap": ap,
            "val_loss": sum(losses) / self.masks.numel(),
            "val_pairs": len(self),
        }


LOGGED = {"I-AUROC": "i_auroc", "P-AUROC": "p_auroc", "P-AP": "p_ap", "P-AUPRO": "p_aupro"}


class RealValidator:
    """The classes of some MVTec-layout folders, with their prompts drawn once per seed
    by evaluate's own plan (`prompt_plan`: random 1-shot prompts, one run per seed)."""

    def __init__(self, roots: Sequence[str | Path], size: int, seeds: tuple[int, ...]) -> None:
        self.classes: list[ClassData] = [c for root in roots for c in read_benchmark(root, "mvtec").classes]
        self.size = size
        self.cfg = EvalConfig(
            data=Path(roots[0]), method="model", seeds=seeds, size=size, overlays=0, fit_normals=0, progress=False
        )
        self.plan = prompt_plan(self.cfg, self.classes)

    def __len__(self) -> int:
        return sum(len(c.test) for c in self.classes)

    @torch.inference_mode()
    def maps(self, model: MetaUAS, device: torch.device) -> Iterator[tuple[str, str, ClassMaps]]:
        """(run label, class name, the class's maps) per run and class, scored as
        `evaluate` scores them (one class's maps held at a time)."""
        scorer = Scorer(model.encoder, model, ("model",), device=device)
        for run, fixed in self.plan.items():
            for data in self.classes:
                bank = class_bank(run, fixed[data.name], data, self.classes, self.size, scorer, {})
                yield run.label, data.name, score_class(self.cfg, scorer, data, self.size, bank, [])

    @torch.inference_mode()
    def __call__(self, model: MetaUAS, device: torch.device) -> dict[str, float]:
        """real_<metric> (mean over classes and seeds) and real_<class>_p_ap, as fractions."""
        was_training = model.training
        model.eval()
        per_class: dict[str, list[dict[str, float]]] = {c.name: [] for c in self.classes}
        for _, name, cm in self.maps(model, device):
            labels = [s.label for s in cm.samples]
            per_class[name].append(compute_metrics(cm.maps["model"], cm.masks, labels, self.cfg.metric))
        model.train(was_training)
        row = {
            f"real_{key}": float(np.nanmean([m[name] for runs in per_class.values() for m in runs]))
            for name, key in LOGGED.items()
        }
        row |= {f"real_{name}_p_ap": float(np.mean([m["P-AP"] for m in runs])) for name, runs in per_class.items()}
        return row


@dataclass
class Validation:
    """What --val names: held-out shard pairs (did it learn the task?) and/or MVTec-layout
    folders of real defects (does it transfer?). best.pt follows the real folders' P-AP
    when there are any, since transfer is what the model is for; else the pairs'."""

    pairs: Validator | None
    real: RealValidator | None

    @property
    def key(self) -> str:
        return "real_p_ap" if self.real is not None else "val_p_ap"

    def __call__(self, model: MetaUAS, device: torch.device, batch_size: int) -> dict[str, float]:
        row = self.pairs(model, device, batch_size) if self.pairs is not None else {}
        return row | (self.real(model, device) if self.real is not None else {})


def build_validation(cfg: TrainConfig) -> Validation | None:
    """What `--val` asks for, read once (rank 0 builds it); None without `--val`."""
    shards, folders = val_sources(cfg)
    if not shards and not folders:
        return None
    pairs = Validator(shards[0] if len(shards) == 1 else tuple(shards), cfg.size, cfg.val_pairs) if shards else None
    return Validation(pairs, RealValidator(folders, cfg.val_size, cfg.val_seeds) if folders else None)
