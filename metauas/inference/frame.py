"""The model's frame: how an image enters the model and how a map becomes a score.

One rule for every path that scores an image (the Python API, `predict`, the page,
`evaluate` and the exported ONNX / OpenVINO graphs), so a threshold fitted on one of
them holds on the others and on another camera:

- input: the whole image is resized to size x size (area interpolation when shrinking,
  bilinear when enlarging; no crop, so a defect at the border stays in the frame),
  RGB float32 in [0, 1], channels first;
- score: the maximum of the anomaly map *at size x size*, before any resizing. The map
  a user sees is that map resized to the image's own size for display only; its maximum
  would move with the file's resolution (bilinear resampling of a peak), the score does
  not (docs/api.md, "One score rule").

torch-free: the exported-graph path imports this without torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from metauas.errors import UserError

# scoring far from the training size: maps and scores drift (the model never saw objects
# at that scale); from this ratio on, a warning says so
FAR_FROM_TRAINING = 1.5


def model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """3 x size x size float32 RGB in [0, 1] of an RGB uint8 H x W x 3 image."""
    interp = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (size, size), interpolation=interp)
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def check_finite(finite: bool, method: str) -> None:
    """The one check of every map a backend makes (`scoring.Scorer.maps` for PyTorch,
    `runtime.GraphBackend.maps` for exported graphs), before predict writes it, evaluate
    ranks it or the page shows it. `finite` is whether every value of the maps is a finite
    number, computed where the maps live (numpy, or torch on the device: one bool, no copy
    of the maps). NaN or infinity (weights that diverged, a broken graph) is one
    UserError, never a "score": NaN or a traceback in the metrics."""
    if not finite:
        raise UserError(
            f"the {method} maps hold NaN or infinity: the weights or the images are not finite numbers; "
            "nothing is scored from them"
        )


def image_score(model_map: np.ndarray) -> float:
    """The image's anomaly score: the maximum of its map in the model's frame."""
    return float(np.max(model_map))


def display_map(model_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The model-frame map resized (bilinear) to an image's H x W, for display and masks."""
    h, w = shape[:2]
    m = np.asarray(model_map, np.float32)
    return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def size_warning(size: int, trained: int | None) -> str | None:
    """A sentence when `size` is far (>= 1.5x either way) from the training size, else None."""
    if not trained or max(size / trained, trained / size) < FAR_FROM_TRAINING:
        return None
    return (
        f"scoring at {size} px, {max(size / trained, trained / size):.1f}x from the model's training size "
        f"{trained} px: maps and scores are less reliable far from it (leave --size out to use {trained})"
    )
