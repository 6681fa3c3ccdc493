"""Fixtures for the evaluation tests: a tiny MVTec-layout benchmark drawn here, 64 px, and
a tiny untrained checkpoint (random encoder weights, so no weights package is needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SIZE = 64


def texture(rng: np.random.Generator, tint: tuple[int, int, int]) -> np.ndarray:
    """A smooth striped surface with mild noise: every normal image of a class alike."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = 0.5 + 0.25 * np.sin(x / 3.0) * np.cos(y / 5.0)
    img = base[..., None] * np.array(tint)[None, None] + rng.normal(0, 4, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark blob with its 0/255 mask."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = rng.integers(16, SIZE - 16, size=2)
    cv2.ellipse(mask, (int(cx), int(cy)), (9, 6), float(rng.integers(0, 180)), 0, 360, 255, -1)
    out = img.copy()
    out[mask > 0] = (30, 30, 30)
    return out, mask


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    return path


def make_mvtec(root: Path, classes: dict[str, tuple[int, int, int]], seed: int = 0) -> Path:
    """<cls>/train/good (3), test/good (2), test/blob (3) + ground_truth/blob/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    for name, tint in classes.items():
        for i in range(3):
            write(root / name / "train" / "good" / f"{i:03d}.png", texture(rng, tint))
        for i in range(2):
            write(root / name / "test" / "good" / f"{i:03d}.png", texture(rng, tint))
        for i in range(3):
            img, mask = defect(texture(rng, tint), rng)
            write(root / name / "test" / "blob" / f"{i:03d}.png", img)
            write(root / name / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory) -> Path:
    return make_mvtec(tmp_path_factory.mktemp("mvtec"), {"tile": (200, 160, 120), "plate": (90, 140, 210)})


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from metauas.trainer.checkpoint import save_checkpoint
    from metauas.trainer.encoder import EncoderConfig
    from metauas.trainer.model import MetaUAS, ModelConfig

    model = MetaUAS(ModelConfig(encoder=EncoderConfig(weights="none"), decoder_channels=(32, 16, 16, 8, 8)))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, size=64, step=0)


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_worker():
    """pytest -n 2 on 2 cores: one torch thread per worker avoids oversubscription."""
    import torch

    torch.set_num_threads(1)
