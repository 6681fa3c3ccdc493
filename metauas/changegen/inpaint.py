"""Inpainting backends behind one interface: fill `hole` pixels of each image.

`opencv` (Telea) and `opencv-ns` (Navier-Stokes) are the offline default;
`patchmatch` (optional package) copies texture into holes; `lama` runs
the TorchScript big-lama model that simple-lama-inpainting uses. Callers composite the
result back only inside the hole, so a backend that touches other pixels (LaMa does)
never changes pixels outside the change mask.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from metauas.changegen.config import INPAINTERS
from metauas.devices import resolve_device
from metauas.errors import UserError

LAMA_ENV = "LAMA_MODEL"


class Inpainter:
    name = "inpainter"
    chunk = 8  # samples synthesised together, so up to this many holes per call

    def inpaint_many(self, images: list[np.ndarray], holes: list[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images and boolean holes of the same size -> filled RGB uint8 images."""
        raise NotImplementedError


class ScaledInpainter(Inpainter):
    """A per-image backend whose cost grows with hole area: holes are filled at a
    working side of at most `work_side` px and the fill is upscaled (the caller keeps
    the original pixels outside the hole)."""

    work_side = 256

    def _fill(self, image: np.ndarray, hole8: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _one(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = min(1.0, self.work_side / max(h, w))
        hole8 = hole.astype(np.uint8)
        if scale == 1.0:
            return self._fill(image, hole8)
        size = (round(w * scale), round(h * scale))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.dilate(cv2.resize(hole8, size, interpolation=cv2.INTER_NEAREST), np.ones((3, 3), np.uint8))
        return cv2.resize(self._fill(small, small_hole), (w, h), interpolation=cv2.INTER_LINEAR)

    def inpaint_many(self, images, holes):
        return [self._one(i, m) for i, m in zip(images, holes)]


class OpenCVInpainter(ScaledInpainter):
    """cv2.inpaint (Telea or Navier-Stokes) at <= 128 px: a Telea fill is smooth at any
    scale, and this cuts its cost ~4x at 256 px (docs/benchmarks.md)."""

    work_side = 128
    RADIUS = 3

    def __init__(self, flags: int = cv2.INPAINT_TELEA, name: str = "opencv"):
        self.flags, self.name = flags, name

    def _fill(self, image, hole8):
        return cv2.inpaint(image, hole8, self.RADIUS, self.flags)


class PatchMatchInpainter(ScaledInpainter):
    """PatchMatch (the optional `pypatchmatch` package) at <= 256 px: fills holes with
    patches copied from the rest of the image, so textures stay sharp where Telea
    smears, at ~250x Telea's cost (docs/benchmarks.md). Its RNG is seeded from a hash
    of the image and hole, so a fill is a pure function of its inputs."""

    name = "patchmatch"
    PATCH_SIZE = 5

    def __init__(self):
        try:
            from patchmatch import patch_match
        except ImportError:
            patch_match = None
        if patch_match is None or not patch_match.patchmatch_available:
            raise UserError("`inpainter` patchmatch needs the pypatchmatch package: pip install 'metauas[patchmatch]'")
        self.pm = patch_match

    def _fill(self, image, hole8):
        digest = hashlib.sha256(image.tobytes() + hole8.tobytes()).digest()
        self.pm.set_random_seed(int.from_bytes(digest[:4], "little"))
        return self.pm.inpaint(image, hole8, patch_size=self.PATCH_SIZE)


def lama_cache_file() -> Path:
    """Where simple-lama-inpainting downloads big-lama.pt: torch hub's checkpoints folder
    ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "big-lama.pt"


def resolve_lama_path(path: Path | None) -> Path:
    """The big-lama TorchScript file: --lama-model, else $LAMA_MODEL, else the file
    simple-lama-inpainting has cached; one clear error when none exists."""
    chosen = path or (Path(os.environ[LAMA_ENV]) if os.environ.get(LAMA_ENV) else None)
    if chosen is None and lama_cache_file().is_file():
        return lama_cache_file()
    if chosen is None or not chosen.is_file():
        where = f"{chosen} does not exist" if chosen else f"no model file given, none at {lama_cache_file()}"
        raise UserError(
            f"the lama inpainter needs the big-lama TorchScript file ({where}): "
            f"pass `lama_model` or set {LAMA_ENV}=PATH"
        )
    return chosen


class LamaInpainter(Inpainter):
    """TorchScript LaMa: model(image, mask) with float tensors in [0, 1], image Bx3xHxW,
    mask Bx1xHxW, sides padded (symmetric) to a multiple of 8 and cropped back.
    Images of a call are batched, on CUDA when present."""

    name = "lama"
    MULTIPLE = 8
    chunk = 32  # ~half the samples need a hole: GPU batches of ~16

    def __init__(self, path: Path):
        import torch  # imported here: OpenCV-only generation never loads torch

        self.torch = torch
        self.device = resolve_device("auto")
        try:
            with warnings.catch_warnings():  # big-lama ships as TorchScript; its deprecation is not the user's
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as err:
            raise UserError(f"`lama_model` {path} is not a TorchScript model ({err})") from None

    def inpaint_many(self, images, holes):
        if not images:
            return []
        torch = self.torch
        h, w = images[0].shape[:2]
        ph, pw = -h % self.MULTIPLE, -w % self.MULTIPLE
        pad = ((0, 0), (0, ph), (0, pw))
        img = np.stack([np.pad(i.transpose(2, 0, 1), pad, mode="symmetric") for i in images]).astype(np.float32) / 255
        msk = np.stack([np.pad(m[None].astype(np.float32), pad, mode="symmetric") for m in holes])
        with torch.inference_mode():
            out = self.model(torch.from_numpy(img).to(self.device), torch.from_numpy(msk).to(self.device))
        out = out[:, :, :h, :w].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(o) for o in out]


def make_inpainter(name: str, lama_model: Path | None) -> Inpainter:
    if name == "opencv":
        return OpenCVInpainter(cv2.INPAINT_TELEA, "opencv")
    if name == "opencv-ns":
        return OpenCVInpainter(cv2.INPAINT_NS, "opencv-ns")
    if name == "patchmatch":
        return PatchMatchInpainter()
    if name == "lama":
        return LamaInpainter(resolve_lama_path(lama_model))
    raise UserError(f"`inpainter` must be one of {', '.join(INPAINTERS)}")
