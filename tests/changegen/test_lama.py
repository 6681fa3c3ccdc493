"""The LaMa path with a tiny TorchScript model of big-lama's call signature."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from changegen_helpers import read_back, run_cli

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class MeanFill(torch.nn.Module):
    """model(image Bx3xHxW, mask Bx1xHxW) -> Bx3xHxW in [0, 1]: fills the hole with the
    inverted mean colour of the known pixels; refuses sides that are not padded to 8."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "sides must be padded to a multiple of 8"
        assert mask.shape[1] == 1 and image.shape[1] == 3
        known = 1.0 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        return image * known + (1.0 - mean) * mask


@pytest.fixture(scope="module")
def tiny_lama(tmp_path_factory):
    path = tmp_path_factory.mktemp("lama") / "tiny-lama.pt"
    torch.jit.script(MeanFill()).save(str(path))
    return path


def test_inpainter_pads_batches_and_crops_back(tiny_lama):
    from metauas.changegen.inpaint import LamaInpainter

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 60, 3), dtype=np.uint8) for _ in range(3)]
    holes = [np.zeros((60, 60), bool) for _ in range(3)]
    for h, y in zip(holes, (5, 20, 40)):
        h[y : y + 10, 10:30] = True
    inpainter = LamaInpainter(tiny_lama)
    calls = []
    scripted = inpainter.model
    inpainter.model = lambda image, mask: calls.append((tuple(image.shape), tuple(mask.shape))) or scripted(image, mask)
    out = inpainter.inpaint_many(images, holes)
    assert calls == [((3, 3, 64, 64), (3, 1, 64, 64))]  # one batched call, sides padded to 64
    assert [o.shape for o in out] == [(60, 60, 3)] * 3
    for img, hole, o in zip(images, holes, out):
        assert np.abs(o[~hole].astype(int) - img[~hole]).max() <= 1
        assert np.ptp(o[hole], axis=0).max() == 0  # one fill colour: the model's output


def test_generate_with_lama_from_env(tmp_path, tiny_lama):
    out = tmp_path / "lama"
    env = {**os.environ, "LAMA_MODEL": str(tiny_lama)}
    run_cli(
        "generate",
        "--inpainter",
        "lama",
        "--change-weights",
        "disappear=1,appear=1",
        "--num-pairs",
        "8",
        "--size",
        "60",
        "--image-format",
        "png",
        "--out",
        str(out),
        "--no-progress",
        env=env,
    )
    samples = read_back(out)
    assert len(samples) == 8
    for s in samples:
        m = s["mask.png"][..., 0] > 0
        assert m.any() and np.array_equal(s["prompt.png"][~m], s["query.png"][~m])
        filled = s["query.png"] if s["json"]["change"] == "disappear" else s["prompt.png"]
        assert len(np.unique(filled[m].reshape(-1, 3), axis=0)) == 1
    assert json.loads((out / "index.json").read_text())["config"]["inpainter"] == "lama"


def test_missing_model_names_flag_and_env_var(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LAMA_MODEL"}
    proc = run_cli(
        "generate",
        "--inpainter",
        "lama",
        "--lama-model",
        str(tmp_path / "big-lama.pt"),
        "--num-pairs",
        "2",
        "--out",
        str(tmp_path / "o"),
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "--lama-model" in proc.stderr and "LAMA_MODEL" in proc.stderr
    proc = run_cli(
        "generate", "--inpainter", "lama", "--num-pairs", "2", "--out", str(tmp_path / "o"), env=env, check=False
    )
    assert proc.returncode == 2 and "--lama-model" in proc.stderr and "LAMA_MODEL" in proc.stderr


def test_file_that_is_not_torchscript(tmp_path):
    bad = tmp_path / "big-lama.pt"
    bad.write_bytes(b"not a model")
    proc = run_cli(
        "generate",
        "--inpainter",
        "lama",
        "--lama-model",
        str(bad),
        "--num-pairs",
        "2",
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert proc.returncode == 2 and "not a TorchScript model" in proc.stderr


def test_lama_finds_simple_lamas_download_cache(tmp_path, tiny_lama):
    """simple-lama-inpainting caches big-lama.pt in torch hub's checkpoints folder."""
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_lama.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "LAMA_MODEL"} | {"TORCH_HOME": str(tmp_path / "torch")}
    out = tmp_path / "pairs"
    run_cli(
        "generate",
        "--inpainter",
        "lama",
        "--change-weights",
        "disappear=1",
        "--num-pairs",
        "2",
        "--size",
        "60",
        "--out",
        str(out),
        "--no-progress",
        env=env,
    )
    assert json.loads((out / "index.json").read_text())["config"]["inpainter"] == "lama"
    cached.unlink()
    proc = run_cli(
        "generate", "--inpainter", "lama", "--num-pairs", "2", "--out", str(tmp_path / "none"), env=env, check=False
    )
    assert proc.returncode == 2 and f"none at {cached}" in proc.stderr
