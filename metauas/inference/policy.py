"""Which normal image(s) each query is compared with (paper §3.4, §4.1): one policy for
the Python API (`Segmenter`), `evaluate` and training validation, so they cannot drift.

A policy has a mode, a seed, a number of shots K and prompt rotations:

- ``random``: K normal images per class drawn with an RNG seeded by (seed, class name),
  the same for every query of the class; repeated over seeds for mean ± std.
- ``best`` (MetaUAS★): per query, the K candidates whose globally pooled last-stage
  encoder features have the highest cosine similarity to the query's (evaluate: the
  class's normal training images; the API: the prompts it was given).
- ``pool``: class-agnostic; one random normal image per class forms a pool, and each
  query takes the K closest prompts of the pool, whatever their class.
- ``file``: a prompts file's list for this seed, replayed exactly.
- ``all``: every candidate is a shot (the API's `use_all`, `predict --use-all-prompts`).

Rotations: each chosen prompt is also seen rotated by these degrees, as more shots
(test-time augmentation for rotation-variant parts), in the order prompt by prompt,
rotation by rotation.

torch-free: choices are made on index lists and similarity matrices of either torch
tensors or numpy arrays, so a runtime without torch chooses by the same rule.
"""

from __future__ import annotations

import os
import typing
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metauas.errors import UserError

PromptMode = Literal["random", "best", "pool"]  # how evaluate chooses prompts (--prompt-mode)
PolicyMode = Literal["random", "best", "pool", "file", "all"]
MODES: tuple[PromptMode, ...] = typing.get_args(PromptMode)


def random_prompts(train: Sequence[Path], shots: int, seed: int, class_name: str) -> list[Path]:
    """K distinct training images, reproducible from (seed, class name) alone."""
    if len(train) < shots:
        raise UserError(
            f"class {class_name}: {len(train)} normal training image(s), `shots` {shots} needs at least {shots}"
        )
    rng = np.random.default_rng([seed, zlib.crc32(os.fsencode(class_name))])
    return [train[i] for i in sorted(rng.choice(len(train), size=shots, replace=False))]


def _top(similarity: Any, k: int) -> list[list[int]]:
    """Per row, the k columns of highest similarity, highest first (torch or numpy)."""
    if hasattr(similarity, "topk"):  # a torch tensor
        return similarity.topk(k, dim=1).indices.cpu().tolist()
    return np.argsort(-np.asarray(similarity), axis=1, kind="stable")[:, :k].tolist()


@dataclass(frozen=True)
class PromptPolicy:
    """How the prompts of each query are chosen among a class's candidates, and seen.

    A run of `evaluate` is one policy (its seed is the run's); the API's `Segmenter`
    holds one for the prompts it was given."""

    mode: PolicyMode = "best"
    seed: int | None = None
    shots: int = 1
    rotations: tuple[int, ...] = (0,)

    @property
    def label(self) -> str:
        """The run's name in metrics.json ("seed3", "pool-seed3", "file-seed0", "best")."""
        return {"random": f"seed{self.seed}", "best": "best"}.get(self.mode, f"{self.mode}-seed{self.seed}")

    @property
    def per_query(self) -> bool:
        """Whether each query picks its own prompts among the candidates (else it takes all of them)."""
        return self.mode in ("best", "pool")

    def drawn(self, name: str, normals: Sequence[Path], shots: int | None = None) -> list[Path]:
        """`shots` (default K) normal images of class `name`, drawn from this policy's seed."""
        return random_prompts(normals, self.shots if shots is None else shots, self.seed or 0, name)

    def candidates(
        self, name: str, normals: Sequence[Path], every: Iterable[tuple[str, Sequence[Path]]] = ()
    ) -> list[Path]:
        """The candidates of class `name` (its normal images `normals`; `every`: each
        class's name and normals, for the pool): random, K drawn; best, all of them;
        pool, one drawn per class of `every`. A file's or the API's prompts are given."""
        if self.mode == "random":
            return self.drawn(name, normals)
        if self.mode == "best":
            if len(normals) < self.shots:
                raise UserError(
                    f"class {name}: {len(normals)} normal training image(s), "
                    f"`shots` {self.shots} needs at least {self.shots}"
                )
            return list(normals)
        if self.mode == "pool":
            return [self.drawn(other, paths, 1)[0] for other, paths in every if paths]
        raise ValueError(f"prompts of mode {self.mode!r} are given, not drawn")

    def choose(
        self,
        queries: int,
        candidates: int,
        vectors: Callable[[list[int]], tuple[Any, Any]] | None = None,
        exclude: int | None = None,
    ) -> list[tuple[int, ...]]:
        """Per query, the indices of the candidates it is compared with. Per-query modes
        call `vectors(allowed)` for (query unit vectors, unit vectors of the allowed
        candidates) and take the K most similar; the others take every candidate.
        `exclude`: a candidate left out (leave-one-out threshold fitting)."""
        allowed = [i for i in range(candidates) if i != exclude]
        if not self.per_query:
            return [tuple(allowed)] * queries
        if len(allowed) < self.shots:
            raise UserError(f"{len(allowed)} prompt candidate(s), `shots` {self.shots} needs more")
        if len(allowed) == 1:  # the only candidate: no vectors needed
            return [tuple(allowed)] * queries
        if vectors is None:
            raise ValueError(f"a {self.mode} policy chooses per query: it needs the vectors")
        query_vecs, candidate_vecs = vectors(allowed)
        return [tuple(allowed[j] for j in row) for row in _top(query_vecs @ candidate_vecs.T, self.shots)]

    def views(self, images: Any) -> list[Any]:
        """N x C x H x W prompt images (torch or numpy) as seen under each rotation."""
        if hasattr(images, "rot90"):  # a torch tensor
            return [images.rot90(r // 90, dims=(2, 3)) for r in self.rotations]
        return [np.ascontiguousarray(np.rot90(images, r // 90, axes=(2, 3))) for r in self.rotations]


def prompt_runs(
    mode: PromptMode, seeds: Sequence[int], shots: int = 1, rotations: tuple[int, ...] = (0,)
) -> list[PromptPolicy]:
    """The runs of an evaluation: one per seed (best mode has no seed: one run)."""
    if mode == "best":
        return [PromptPolicy("best", None, shots, rotations)]
    return [PromptPolicy(mode, s, shots, rotations) for s in seeds]
