"""The torch side of prompt choice (the policy itself is `policy.py`): prompt files,
candidate banks, and encoding the chosen prompts.

- a prompts file replays published prompt lists exactly (`read_prompt_file`);
- `PromptBank` holds a class's candidate prompts under a policy (tensors loaded once,
  global vectors) and chooses each query's prompts by it;
- `prompt_features` encodes the chosen prompts (and their rotations) once, and caches
  them when a batch shares them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from metauas.errors import UserError
from metauas.inference.policy import PromptPolicy
from metauas.inference.scoring import Scorer, load_tensor


@torch.no_grad()
def global_features(encoder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """N x C unit vectors: the last stage's features averaged over positions."""
    return pooled(encoder(images)[-1])


def pooled(last_stage: torch.Tensor) -> torch.Tensor:
    """N x C unit vectors of an encoder's last-stage features averaged over positions."""
    return F.normalize(last_stage.mean(dim=(2, 3)), dim=1)


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
    return [str(n) for n in names]  # every one a name: checked above


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
    """A class's candidate prompts (or the pool) under a policy: paths, lazily loaded
    tensors, global vectors; it chooses each query's prompts and encodes them."""

    def __init__(self, policy: PromptPolicy, paths: Sequence[Path], size: int, scorer: Scorer) -> None:
        self.policy, self.paths, self.size, self.scorer = policy, list(paths), size, scorer
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

    def choose(self, query_feats: list[torch.Tensor], batch: int) -> list[list[Path]]:
        """K prompt paths per query of the batch (the bank's vectors computed in batches of `batch`)."""
        picks = self.policy.choose(
            query_feats[0].shape[0], len(self.paths), lambda allowed: (pooled(query_feats[-1]), self.vectors(batch))
        )
        return [[self.paths[i] for i in row] for row in picks]

    def features(
        self, chosen: list[list[Path]], cache: dict[tuple[Path, ...], list[list[torch.Tensor]]]
    ) -> list[list[torch.Tensor]]:
        """The chosen prompts' encoder features, per shot and rotation (`prompt_features`)."""
        return prompt_features(self.scorer, chosen, self.tensor, cache, self.policy)


def prompt_features(
    scorer: Scorer,
    chosen: list[list[Path]],
    load: Callable[[Path], torch.Tensor],
    cache: dict[tuple[Path, ...], list[list[torch.Tensor]]],
    policy: PromptPolicy = PromptPolicy(),
) -> list[list[torch.Tensor]]:
    """Per shot (and per rotation of each prompt the policy asks for), encoder features
    with batch 1 when all queries share the prompt (then computed once per class and
    cached)."""
    shared = all(c == chosen[0] for c in chosen)
    if shared and tuple(chosen[0]) in cache:
        return cache[tuple(chosen[0])]
    shots = []
    for k in range(len(chosen[0])):
        paths = [chosen[0][k]] if shared else [c[k] for c in chosen]
        images = torch.stack([load(p) for p in paths])
        shots += [scorer.features(view) for view in policy.views(images)]
    if shared:
        cache[tuple(chosen[0])] = shots
    return shots
