"""The Python API: a trained model (or the lookup baseline) as an object you call on images.

    import metauas
    model = metauas.load("runs/r1/best.pt")                  # a path, or "hf:owner/repo/file.ckpt"
    result = model.segment("query.png", prompt="normal.png")  # .map, .score, .mask, .anomalous

`Segmenter` runs the prepared inference path (`prepared.py`: BatchNorm folded,
channels_last, inference mode) and encodes the prompt(s) once: `set_prompts` caches
their features, so scoring a stream of queries against one normal image pays one
encoder pass per query. Images are paths, PIL images or numpy arrays (H x W x 3 RGB or
H x W grey, uint8, or float in [0, 1]). Maps come back at each query's own size.

Decisions: `fit_threshold` learns a threshold from normal images (rule below), after
which every result carries a binary `mask` and an `anomalous` flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch

from metauas.data.images import read_image, to_rgb
from metauas.devices import resolve_device
from metauas.errors import UserError
from metauas.inference.config import LookupConfig
from metauas.inference.policy import PromptPolicy
from metauas.inference.prompts import pooled
from metauas.inference.scoring import Scorer, build_scorer, map_to_numpy, methods_for, to_tensor

Image = Union[str, Path, np.ndarray, Any]  # Any: a PIL.Image.Image (PIL is not imported here)


def as_rgb(image: Image) -> np.ndarray:
    """RGB uint8 H x W x 3 from a path, a PIL image or an array (grey, RGB(A); uint8 or [0, 1] floats)."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or array.size == 0:
        raise UserError(f"an image must be H x W or H x W x 1|3|4, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise UserError(f"an image array must be uint8, or float in [0, 1]; got {array.dtype}")
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return to_rgb(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)


@dataclass
class Segmentation:
    """One query's result: the anomaly map at the query's size and what it implies."""

    map: np.ndarray  # H x W float32 in [0, 1]
    score: float  # image score: the map's maximum (the paper's)
    prompts: tuple[int, ...]  # which prompts (indices into set_prompts) the query was compared with
    threshold: float | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """Pixels above the threshold (None until a threshold is set)."""
        return None if self.threshold is None else self.map > self.threshold

    @property
    def anomalous(self) -> bool | None:
        """Whether the image score exceeds the threshold (None until one is set)."""
        return None if self.threshold is None else bool(self.score > self.threshold)


class Segmenter:
    """Anomaly maps of queries against cached normal prompt(s), by one method."""

    def __init__(self, scorer: Scorer, meta: dict, size: int | None = None, batch_size: int = 8) -> None:
        if len(scorer.methods) != 1:
            raise UserError("a Segmenter runs one method: model, lookup or mix")
        self.scorer, self.meta = scorer, meta
        self.size = size or int(meta.get("size", 256))
        self.batch_size = batch_size
        self.threshold: float | None = None
        self.policy = PromptPolicy("best")  # each query takes its closest prompt (set_prompts)
        self._prompts: list[np.ndarray] = []
        self._feats: list[list[torch.Tensor]] | None = None  # per rotation, encoder stages with batch K
        self._vectors: torch.Tensor | None = None

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        *,
        method: str = "model",
        size: int | None = None,
        device: str = "auto",
        shot_fusion: str = "features",
        lookup: LookupConfig = LookupConfig(),
        mix_weight: float = 0.5,
        batch_size: int = 8,
        compile: bool = False,
    ) -> Segmenter:
        """A checkpoint path, a pretrained name (`hf:owner/repo/file`, see `model.hub`), or
        None with `method="lookup"` (the training-free baseline, default encoder)."""
        scorer, meta = build_scorer(
            checkpoint, methods_for(method), shot_fusion, lookup, resolve_device(device), mix_weight, compile=compile
        )
        return cls(scorer, meta, size, batch_size)

    @property
    def method(self) -> str:
        return self.scorer.methods[0]

    def prompt_image(self, index: int) -> np.ndarray:
        """The RGB array of prompt `index` (as given to `set_prompts`)."""
        return self._prompts[index]

    @property
    def use_all(self) -> bool:
        """Whether every prompt is a shot of every query (else each takes its closest)."""
        return self.policy.mode == "all"

    def _encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        parts = [self.scorer.features(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return [torch.cat(stage) for stage in zip(*parts)]

    def set_prompts(self, *images: Image, use_all: bool = False, rotations: Sequence[int] = (0,)) -> Segmenter:
        """Normal image(s) every later query is compared with: with several, each query
        takes the most similar one (global features, as `--prompt-mode best`), or all of
        them as K shots with `use_all=True`; `rotations` (degrees, multiples of 90) adds
        each prompt rotated as more shots (as `evaluate --prompt-rotations`). The policy
        is `inference.policy`'s, evaluate's; the features are computed once, here."""
        if not images:
            raise UserError("give at least one normal prompt image")
        if not rotations or any(r % 90 for r in rotations):
            raise UserError(f"prompt rotations are multiples of 90 degrees, got {list(rotations)}")
        self.policy = PromptPolicy("all" if use_all else "best", rotations=tuple(rotations))
        self._prompts = [as_rgb(im) for im in images]
        batch = torch.stack([to_tensor(rgb, self.size) for rgb in self._prompts])
        self._feats = [self._encode(view) for view in self.policy.views(batch)]
        rotations = self.policy.rotations
        plain = self._feats[rotations.index(0)] if 0 in rotations else self._encode(batch)
        self._vectors = pooled(plain[-1])  # prompts are chosen by their unrotated look
        return self

    def _prompt_feats(
        self, query_feats: list[torch.Tensor], exclude: int | None = None
    ) -> tuple[list[list[torch.Tensor]], list[tuple[int, ...]]]:
        """Per shot (chosen prompt, then rotation), prompt features: batch 1 when every
        query uses the same prompts, else one row per query."""
        prompt_feats, vectors = self._feats, self._vectors
        if prompt_feats is None or vectors is None:
            raise UserError("set a normal prompt first: segment(query, prompt=...) or set_prompts(...)")
        picks = self.policy.choose(
            query_feats[0].shape[0],
            len(self._prompts),
            lambda allowed: (pooled(query_feats[-1]), vectors[allowed]),
            exclude,
        )
        shared = all(p == picks[0] for p in picks)
        rows = [slice(i, i + 1) for i in picks[0]] if shared else [list(shot) for shot in zip(*picks)]
        return [[f[row] for f in feats] for row in rows for feats in prompt_feats], picks

    def _segment_rgbs(self, rgbs: list[np.ndarray], exclude: int | None = None) -> list[Segmentation]:
        if self._feats is None:
            raise UserError("set a normal prompt first: segment(query, prompt=...) or set_prompts(...)")
        out = []
        for i in range(0, len(rgbs), self.batch_size):
            batch = rgbs[i : i + self.batch_size]
            feats = self.scorer.features(torch.stack([to_tensor(rgb, self.size) for rgb in batch]))
            prompt_feats, used = self._prompt_feats(feats, exclude)
            maps = self.scorer.maps(prompt_feats, feats, (self.size, self.size))[self.method]
            for rgb, m, u in zip(batch, maps, used):
                full = cv2.resize(map_to_numpy(m), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
                out.append(Segmentation(full, float(full.max()), u, self.threshold))
        return out

    def segment(
        self,
        query: Image | Sequence[Image],
        prompt: Image | Sequence[Image] | None = None,
        threshold: float | None = None,
    ) -> Segmentation | list[Segmentation]:
        """The map, score (and with a threshold, mask and decision) of one query, or a list
        of them for a list of queries. `prompt` (one image or several) replaces the
        cached prompts (chosen by the same policy); `threshold` overrides the fitted one for this call."""
        if prompt is not None:
            images: Sequence[Image] = prompt if isinstance(prompt, (list, tuple)) else [prompt]
            self.set_prompts(*images, use_all=self.use_all, rotations=self.policy.rotations)
        single = not isinstance(query, (list, tuple))
        queries: Sequence[Image] = query if isinstance(query, (list, tuple)) else [query]
        results = self._segment_rgbs([as_rgb(q) for q in queries])
        if threshold is not None:
            for r in results:
                r.threshold = threshold
        return results[0] if single else results

    def fit_threshold(self, normals: Sequence[Image] | None = None, quantile: float = 1.0) -> float:
        """Learn the decision threshold from normal images and keep it (`self.threshold`).

        Rule: each normal image is segmented against the prompt(s), as a query would be;
        the threshold is the `quantile` (default 1.0: the maximum) of their image scores,
        i.e. by default a query is anomalous when its map exceeds everything the normal
        images produced. Without `normals`, the prompts themselves are used, each scored
        against the others (leave-one-out; needs at least two prompts)."""
        if not 0 < quantile <= 1:
            raise UserError(f"the threshold quantile must be in (0, 1], got {quantile}")
        if normals is not None:
            rgbs = [as_rgb(n) for n in normals]
            scores = [r.score for r in self._segment_rgbs(rgbs)] if rgbs else []
        elif len(self._prompts) >= 2:
            scores = [self._segment_rgbs([rgb], exclude=i)[0].score for i, rgb in enumerate(self._prompts)]
        else:
            scores = []
        if not scores:
            raise UserError("an automatic threshold needs normal images: give `normals` or at least two prompts")
        self.threshold = float(np.quantile(scores, quantile))
        return self.threshold


def load(checkpoint: str | Path | None = None, **options) -> Segmenter:
    """`metauas.load(...)`: see `Segmenter.load`."""
    return Segmenter.load(checkpoint, **options)
