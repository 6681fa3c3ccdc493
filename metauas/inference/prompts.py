"""Which normal image(s) each query is compared with (paper §3.4, §4.1).

- ``random``: K training images per class drawn with an RNG seeded by (seed, class name),
  the same for every query of the class; repeated over seeds for mean ± std.
- ``best`` (MetaUAS★): per query, the K training images of its class whose globally
  pooled last-stage encoder features have the highest cosine similarity to the query's.
- ``pool``: class-agnostic; one random prompt per class forms a pool and each query takes
  the K closest prompts of the pool, whatever their class.
- a prompts file replays published prompt lists exactly (`read_prompt_file`).

`PromptBank` holds a class's candidate prompts (tensors loaded once, global vectors);
`prompt_features` encodes the chosen prompts once and caches them when a batch shares them.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metauas.errors import UserError
from metauas.inference.config import MODES  # noqa: F401  (the modes this module implements)
from metauas.inference.scoring import Scorer, load_tensor


def random_prompts(train: Sequence[Path], shots: int, seed: int, class_name: str) -> list[Path]:
    """K distinct training images, reproducible from (seed, class name) alone."""
    if len(train) < shots:
        raise UserError(
            f"class {class_name}: {len(train)} normal training image(s), --shots {shots} needs at least {shots}"
        )
    rng = np.random.default_rng([seed, zlib.crc32(os.fsencode(class_name))])
    return [train[i] for i in sorted(rng.choice(len(train), size=shots, replace=False))]


@torch.no_grad()
def global_features(encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """N x C unit vectors: the last stage's features averaged over positions."""
    return pooled(encoder(images)[-1])


def pooled(last_stage: torch.Tensor) -> torch.Tensor:
    """N x C unit vectors of an encoder's last-stage features averaged over positions."""
    return F.normalize(last_stage.mean(dim=(2, 3)), dim=1)


def closest(query_vecs: torch.Tensor, bank_vecs: torch.Tensor, shots: int) -> torch.Tensor:
    """N x K indices into the bank, most similar first (cosine of unit vectors)."""
    if bank_vecs.shape[0] < shots:
        raise UserError(f"{bank_vecs.shape[0]} prompt candidate(s), --shots {shots} needs more")
    return (query_vecs @ bank_vecs.T).topk(shots, dim=1).indices


def _resolve(name: str, roots: Sequence[Path]) -> Path:
    path = Path(name)
    candidates = [path] if path.is_absolute() else [r / path for r in roots]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"prompt image {name!r} not found (looked in {', '.join(map(str, roots))})")


def _names(entry, cls: str, path: Path) -> list[str]:
    """A class's prompt name(s): "img", ["img", ...], or the MetaUAS authors' record(s)
    {"filename": "img", ...} (their data/<set>/oneprompt_seedN.json files, used as they are)."""
    entries = entry if isinstance(entry, list) else [entry]
    names = [e.get("filename") if isinstance(e, dict) else e for e in entries]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(
            f'prompts file {path}: class {cls!r} needs an image name, a list of them or {{"filename": ...}} records'
        )
    return names


def read_prompt_file(path: Path, data_root: Path) -> dict[int, dict[str, list[Path]]]:
    """Prompt lists by seed: {"cls": "img" | ["img", ...] | {"filename": "img", ...}} (one
    run: its seed is the number after "seed" in the file name, e.g. oneprompt_seed3.json,
    else 0) or {"<seed>": {"cls": ...}, ...}. Paths are absolute, or relative to the data
    root or to the file's folder."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nested beyond reason
        raise UserError(f"cannot read prompts file {path}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"prompts file {path} must be a JSON object of class -> image(s)")
    per_seed = all(k.lstrip("-").isdigit() and isinstance(v, dict) for k, v in data.items())
    named = re.search(r"seed(\d+)", Path(path).stem)
    runs = {int(k): v for k, v in data.items()} if per_seed else {int(named[1]) if named else 0: data}
    roots = [Path(data_root), Path(path).parent]
    return {
        seed: {cls: [_resolve(n, roots) for n in _names(entry, cls, path)] for cls, entry in classes.items()}
        for seed, classes in runs.items()
    }


class PromptBank:
    """Normal images of a class (or the pool): paths, lazily loaded tensors, global vectors."""

    def __init__(self, paths: Sequence[Path], size: int, scorer: Scorer) -> None:
        self.paths, self.size, self.scorer = list(paths), size, scorer
        self._tensors: dict[Path, torch.Tensor] = {}
        self._vectors: torch.Tensor | None = None

    def tensor(self, path: Path) -> torch.Tensor:
        if path not in self._tensors:
            self._tensors[path] = load_tensor(path, self.size)
        return self._tensors[path]

    def vectors(self, batch: int) -> torch.Tensor:
        if self._vectors is None:
            parts = [
                global_features(
                    self.scorer.encoder,
                    torch.stack([load_tensor(p, self.size) for p in self.paths[i : i + batch]]).to(self.scorer.device),
                )
                for i in range(0, len(self.paths), batch)
            ]
            self._vectors = torch.cat(parts)
        return self._vectors


def prompt_features(
    scorer: Scorer,
    chosen: list[list[Path]],
    load,
    cache: dict[tuple[Path, ...], list[list[torch.Tensor]]],
    rotations: Sequence[int] = (0,),
) -> list[list[torch.Tensor]]:
    """Per shot (and per rotation of each prompt, test-time augmentation for rotation-
    variant parts), encoder features with batch 1 when all queries share the prompt (then
    computed once per class and cached)."""
    shared = all(c == chosen[0] for c in chosen)
    if shared and tuple(chosen[0]) in cache:
        return cache[tuple(chosen[0])]
    shots = []
    for k in range(len(chosen[0])):
        paths = [chosen[0][k]] if shared else [c[k] for c in chosen]
        images = torch.stack([load(p) for p in paths])
        shots += [scorer.features(torch.rot90(images, r // 90, dims=(2, 3))) for r in rotations]
    if shared:
        cache[tuple(chosen[0])] = shots
    return shots
