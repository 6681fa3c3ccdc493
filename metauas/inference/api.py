"""The Python API: a trained model (or the lookup baseline) as an object you call on images.

    import metauas
    model = metauas.load("runs/r1/best.pt")                  # or "model.onnx", "model.xml", "hf:owner/repo/file"
    result = model.segment("query.png", prompt="normal.png")  # .map, .score, .mask, .anomalous

`Segmenter` holds one backend: a PyTorch checkpoint (the prepared inference path,
`prepared.py`), or a graph written by `metauas export` run by onnxruntime or OpenVINO
(`runtime.py`, no torch imported). The prompt(s) are encoded once: `set_prompts` caches
their features, so scoring a stream of queries against one normal image pays one
encoder pass per query.

Inputs: a path (a file, or a folder: every image in it, sorted; `recursive=True` for
subfolders), a PIL image, or a numpy array H x W x 3 RGB / H x W grey that says its
range by its type: uint8 (0..255) or float in [0, 1]. A float array outside [0, 1] is
an error, not clipped: 0..255 floats would silently become a white image.

Scores: the image score is the maximum of the map in the model's frame (size x size),
the map a result carries is resized to the image's size for display (`frame.py`), so
the same photo stored at another resolution scores the same. `fit_threshold` learns a
threshold from normal images, after which every result carries a binary `mask` and an
`anomalous` flag.
"""

from __future__ import annotations

import numbers
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from metauas.data.images import IMAGE_SUFFIXES, read_image, to_rgb
from metauas.errors import UserError
from metauas.inference.config import DEFAULT_METHOD, MIX_WEIGHT, LookupConfig
from metauas.inference.frame import display_map, image_score, model_input, size_warning
from metauas.inference.policy import PromptPolicy

Image = Union[str, Path, np.ndarray, Any]  # Any: a PIL.Image.Image (PIL is not imported here)
GRAPH_SUFFIXES = (".onnx", ".xml")  # exported graphs: onnxruntime, OpenVINO IR


def as_rgb(image: Image) -> np.ndarray:
    """RGB uint8 H x W x 3 from a path, a PIL image or an array (grey or RGB(A); uint8, or
    float in [0, 1])."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or array.size == 0:
        raise UserError(f"an image must be H x W or H x W x 1|3|4, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        array = _float_to_uint8(array)
    return to_rgb(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8; any other type or range is one clear error."""
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(
            f"an image array must be uint8 (0..255) or float in [0, 1]; got {array.dtype} "
            "(convert it, e.g. array.astype(np.uint8) for 8-bit data)"
        )
    low, high = float(np.min(array)), float(np.max(array))
    if not (0.0 <= low and high <= 1.0):  # NaN fails too
        raise UserError(
            f"a float image array must hold values in [0, 1], got {low:g}..{high:g}: "
            "divide 8-bit data by 255 or pass it as uint8"
        )
    return (array * 255).round().astype(np.uint8)


def find_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (by suffix, hidden ones left out), sorted; with
    `recursive`, those of its subfolders too."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def expand(images: Image | Sequence[Image], recursive: bool = False) -> tuple[list[Image], bool]:
    """(the images, whether one single image was given): folders become their files."""
    single = not isinstance(images, (list, tuple))
    items: list[Image] = list(images) if isinstance(images, (list, tuple)) else [images]
    out: list[Image] = []
    for item in items:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            files = find_images(Path(item), recursive)
            if not files:
                hint = "" if recursive else " (recursive=True searches its subfolders)"
                raise UserError(f"no images in folder {item}{hint}")
            out += files
            single = False
        else:
            out.append(item)
    return out, single


def check_threshold(value: Any) -> float:
    """A decision threshold: a real number in [0, 1] (maps are probabilities)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"a threshold must be a number in [0, 1] (scores and maps are in [0, 1]), got {value!r}")
    return float(value)


@dataclass(repr=False)
class Segmentation:
    """One query's result: the anomaly map at the query's size and what it implies."""

    map: np.ndarray  # H x W float32 in [0, 1], the model-frame map resized for display
    score: float  # image score: the maximum of the map in the model's frame (frame.py)
    prompts: tuple[int, ...]  # which prompts (indices into set_prompts) the query was compared with
    threshold: float | None = None
    path: str | None = None  # the query's file, when it was given as a path

    @property
    def mask(self) -> np.ndarray | None:
        """Pixels above the threshold (None until a threshold is set)."""
        return None if self.threshold is None else self.map > self.threshold

    @property
    def anomalous(self) -> bool | None:
        """Whether the image score exceeds the threshold (None until one is set)."""
        return None if self.threshold is None else bool(self.score > self.threshold)

    def __repr__(self) -> str:
        decision = "" if self.threshold is None else (f", threshold={self.threshold:.4f}, anomalous={self.anomalous}")
        where = f"path={self.path!r}, " if self.path else ""
        return (
            f"Segmentation({where}score={self.score:.4f}{decision}, map={self.map.shape[0]}x{self.map.shape[1]}, "
            f"prompts={self.prompts})"
        )


class Segmenter:
    """Anomaly maps of queries against cached normal prompt(s), by one method on one backend.

    A backend (`scoring.TorchBackend`, `runtime.GraphBackend`) encodes N x 3 x S x S
    inputs to per-stage features, gives the unit vectors prompts are chosen by, and maps
    (prompt shots, query features) to N x S x S maps; the rest is here, shared."""

    def __init__(self, backend: Any, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        self.backend, self.batch_size = backend, batch_size
        self._threshold: float | None = None
        self.threshold = getattr(backend, "threshold", None)  # an exported graph may carry one
        self.policy = PromptPolicy("best")  # each query takes its closest prompt (set_prompts)
        self._prompts: list[np.ndarray] = []
        self._feats: list[list[Any]] | None = None  # per rotation, encoder stages of the prompts, batch K
        self._vectors: np.ndarray | None = None
        note = size_warning(self.size, backend.meta.get("size"))
        if note:
            warnings.warn(note, stacklevel=3)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        *,
        method: str | None = None,
        size: int | None = None,
        device: str = "auto",
        shot_fusion: str = "features",
        lookup: LookupConfig = LookupConfig(),
        mix_weight: float = MIX_WEIGHT,
        batch_size: int = 8,
        compile: bool = False,
    ) -> Segmenter:
        """A checkpoint path, a pretrained name (`hf:owner/repo/file`, see `model.hub`), a
        graph from `metauas export` (.onnx: onnxruntime, .xml: OpenVINO; no torch needed),
        or None with `method="lookup"` (the training-free baseline, default encoder).
        `method` defaults to `DEFAULT_METHOD` for a checkpoint; a graph computes the method it was
        exported with (`metauas export --method`), and naming another one is an error."""
        if checkpoint is not None and Path(str(checkpoint)).suffix.lower() in GRAPH_SUFFIXES:
            from metauas.inference.runtime import load_graph_backend

            backend = load_graph_backend(Path(checkpoint), size, device)
            if method not in (None, backend.method):
                raise UserError(
                    f"{checkpoint} computes the {backend.method} map: method {method!r} needs a graph "
                    "exported with that method (`metauas export`) or the PyTorch checkpoint"
                )
            return cls(backend, batch_size)
        from metauas.inference.scoring import TorchBackend

        torch_backend = TorchBackend.load(
            checkpoint, method or DEFAULT_METHOD, size, device, shot_fusion, lookup, mix_weight, compile
        )
        return cls(torch_backend, batch_size)

    @property
    def method(self) -> str:
        return self.backend.method

    @property
    def size(self) -> int:
        """The model's frame: inputs are resized to size x size, scores are taken there."""
        return self.backend.size

    @property
    def meta(self) -> dict:
        return self.backend.meta

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def threshold(self) -> float | None:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self._threshold = None if value is None else check_threshold(value)

    def __repr__(self) -> str:
        t = "None" if self._threshold is None else f"{self._threshold:.4f}"
        return (
            f"Segmenter(method={self.method!r}, runtime={self.backend.runtime!r}, size={self.size}, "
            f"device={self.device!r}, prompts={len(self._prompts)}, threshold={t}, "
            f"source={self.backend.source!r})"
        )

    def prompt_image(self, index: int) -> np.ndarray:
        """The RGB array of prompt `index` (as given to `set_prompts`)."""
        return self._prompts[index]

    @property
    def use_all(self) -> bool:
        """Whether every prompt is a shot of every query (else each takes its closest)."""
        return self.policy.mode == "all"

    def _encode(self, batch: np.ndarray) -> list[Any]:
        """Encoder stages of N x 3 x S x S inputs, encoded `batch_size` at a time."""
        parts = [self.backend.encode(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return self.backend.concat(parts)

    def set_prompts(
        self, *images: Image, use_all: bool = False, rotations: Sequence[int] = (0,), recursive: bool = False
    ) -> Segmenter:
        """Normal image(s) every later query is compared with (files, folders, arrays):
        with several, each query takes the most similar one (global features, as
        `--prompt-mode best`), or all of them as K shots with `use_all=True`; `rotations`
        (degrees, multiples of 90) adds each prompt rotated as more shots (as `evaluate
        --prompt-rotations`). The choice is `inference.policy`'s, evaluate's; the
        features are computed once, here."""
        images_, _ = expand(list(images), recursive)
        if not images_:
            raise UserError("give at least one normal prompt image")
        if not rotations or any(r % 90 for r in rotations):
            raise UserError(f"prompt rotations are multiples of 90 degrees, got {list(rotations)}")
        self.policy = PromptPolicy("all" if use_all else "best", rotations=tuple(rotations))
        self._prompts = [as_rgb(im) for im in images_]
        batch = np.stack([model_input(rgb, self.size) for rgb in self._prompts])
        self._feats = [self._encode(view) for view in self.policy.views(batch)]
        self._vectors = None
        return self

    def _prompt_vectors(self) -> np.ndarray:
        """Unit vectors of the prompts as they are (unrotated): what queries choose by."""
        if self._vectors is None and self._feats is not None:
            rotations = self.policy.rotations
            plain = (
                self._feats[rotations.index(0)]
                if 0 in rotations
                else self._encode(np.stack([model_input(rgb, self.size) for rgb in self._prompts]))
            )
            self._vectors = self.backend.vectors(plain)
        return typing.cast(np.ndarray, self._vectors)  # set above once there are prompts

    def _prompt_feats(
        self, query_feats: list[Any], exclude: int | None = None
    ) -> tuple[list[list[Any]], list[tuple[int, ...]]]:
        """Per shot (chosen prompt, then rotation), prompt features: batch 1 when every
        query uses the same prompts, else one row per query."""
        if self._feats is None:
            raise UserError("set a normal prompt first: segment(query, prompt=...) or set_prompts(...)")
        views = self._feats
        picks = self.policy.choose(
            len(query_feats[0]),
            len(self._prompts),
            lambda allowed: (self.backend.vectors(query_feats), self._prompt_vectors()[allowed]),
            exclude,
        )
        shared = all(p == picks[0] for p in picks)
        rows = [slice(i, i + 1) for i in picks[0]] if shared else [list(shot) for shot in zip(*picks)]
        return [[f[row] for f in feats] for row in rows for feats in views], picks

    def _segment_rgbs(
        self, rgbs: list[np.ndarray], exclude: int | None = None, paths: Sequence[str | None] | None = None
    ) -> list[Segmentation]:
        if self._feats is None:
            raise UserError("set a normal prompt first: segment(query, prompt=...) or set_prompts(...)")
        paths = paths or [None] * len(rgbs)
        out = []
        for i in range(0, len(rgbs), self.batch_size):
            batch = rgbs[i : i + self.batch_size]
            feats = self.backend.encode(np.stack([model_input(rgb, self.size) for rgb in batch]))
            prompt_feats, used = self._prompt_feats(feats, exclude)
            maps = self.backend.maps(prompt_feats, feats)
            for rgb, m, u, p in zip(batch, maps, used, paths[i : i + self.batch_size]):
                out.append(Segmentation(display_map(m, rgb.shape), image_score(m), u, self._threshold, p))
        return out

    def segment(
        self,
        query: Image | Sequence[Image],
        prompt: Image | Sequence[Image] | None = None,
        threshold: float | None = None,
        recursive: bool = False,
    ) -> Segmentation | list[Segmentation]:
        """The map, score (and with a threshold, mask and decision) of one query, or a list
        of them for a list of queries or a folder (`recursive`: its subfolders too).
        `prompt` (one image, several, or a folder) replaces the cached prompts (chosen by
        the same policy);
        `threshold` overrides the fitted one for this call."""
        t = None if threshold is None else check_threshold(threshold)
        if prompt is not None:
            images: Sequence[Image] = prompt if isinstance(prompt, (list, tuple)) else [prompt]
            self.set_prompts(*images, use_all=self.use_all, rotations=self.policy.rotations, recursive=recursive)
        queries, single = expand(query, recursive)
        paths = [str(q) if isinstance(q, (str, Path)) else None for q in queries]
        results = self._segment_rgbs([as_rgb(q) for q in queries], paths=paths)
        if t is not None:
            for r in results:
                r.threshold = t
        return results[0] if single else results

    def fit_threshold(
        self, normals: Image | Sequence[Image] | None = None, quantile: float = 1.0, recursive: bool = False
    ) -> float:
        """Learn the decision threshold from normal images and keep it (`self.threshold`).

        Rule: each normal image (files, arrays, or a folder of them) is segmented against
        the prompt(s), as a query would be; the threshold is the `quantile` (default 1.0:
        the maximum) of their image scores, i.e. by default a query is anomalous when its
        score exceeds every normal image's. Without `normals`, the prompts themselves are
        used, each scored against the others (leave-one-out; needs at least two prompts)."""
        if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not 0 < quantile <= 1:
            raise UserError(f"the threshold quantile must be in (0, 1], got {quantile!r}")
        if normals is not None:
            images, _ = expand(normals, recursive)
            scores = [r.score for r in self._segment_rgbs([as_rgb(n) for n in images])] if images else []
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
