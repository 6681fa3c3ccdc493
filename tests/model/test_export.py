"""`metauas export --format onnx`: graphs that onnxruntime runs like PyTorch, on random
inputs (checked by the command itself) and on real photographs (checked here)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from metauas.cli import main  # noqa: E402 - after the importorskip above
from metauas.model.checkpoint import load_model  # noqa: E402 - after the importorskip above


def _photos(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real photograph and a copy with a patch changed, as 1 x 3 x S x S float32."""
    import skimage.data

    rgb = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    changed = rgb.copy()
    changed[size // 4 : size // 2, size // 4 : size // 2] = (20, 200, 40)
    as_input = [np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32) / 255 for x in (rgb, changed)]
    return as_input[0], as_input[1]


@pytest.mark.slow  # three dynamo exports, about a minute on 2 cores
def test_export_writes_checked_graphs_that_match_pytorch_on_photographs(checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--cached-prompt"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("wrote") == 3 and "opset 18, 64 px" in printed
    model, _ = load_model(checkpoint)
    prompt, query = _photos(64)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(prompt), torch.from_numpy(query))).numpy()

    full = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    [got] = full.run(["map"], {"prompt": prompt, "query": query})
    assert got.shape == (1, 1, 64, 64) and np.abs(got - expected).max() < 1e-4

    encode = ort.InferenceSession(str(tmp_path / "tiny-prompt.onnx"), providers=["CPUExecutionProvider"])
    stages = encode.run(None, {"prompt": prompt})
    decode = ort.InferenceSession(str(tmp_path / "tiny-query.onnx"), providers=["CPUExecutionProvider"])
    feed = {f"stage{i}": s for i, s in enumerate(stages)}
    queries = np.concatenate([query, prompt, query])  # one cached prompt, a batch of three queries
    [maps] = decode.run(["map"], {i.name: {**feed, "query": queries}[i.name] for i in decode.get_inputs()})
    assert maps.shape == (3, 1, 64, 64) and np.abs(maps[0] - expected[0]).max() < 1e-4
    assert np.abs(maps[0] - maps[2]).max() < 1e-6  # a query's map does not depend on its batch


def test_export_refuses_a_wrong_output_name(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.pt")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err


class _NanWhereBright(torch.nn.Module):
    """A graph whose output is NaN where its input exceeds 0.5 (in both runtimes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0.5, torch.full_like(x, float("nan")), x)


@pytest.mark.slow  # one dynamo export, about 10 s on 2 cores
def test_the_parity_check_fails_on_nan(tmp_path):
    """NaN compares false with everything: `diff > tol` would pass it; the check must not."""
    from metauas.errors import UserError
    from metauas.model.export import _export

    out = tmp_path / "nan.onnx"
    with pytest.raises(UserError, match="differs from PyTorch by nan"):
        _export(
            _NanWhereBright(), (torch.rand(2, 3, 8, 8),), ["x"], ["y"], out, {"x": {0: torch.export.Dim("b")}}, 1e-4
        )
    assert list(tmp_path.iterdir()) == []
