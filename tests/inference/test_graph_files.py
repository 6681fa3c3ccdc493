"""Loading exported graphs: a file that is not one of ours, or is damaged, incomplete or
the wrong part, is one clear error; and the graph path never imports torch. (Parity of
real exports with PyTorch: tests/model/test_export.py, slow.)"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from test_extras import cli, run_without_torch

import metauas
from metauas.errors import UserError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _identity(path, meta: dict | None = None):
    """A real one-node ONNX model (x -> Identity -> map), with metadata as given."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("map", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["map"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    helper.set_model_props(model, {f"metauas.{k}": json.dumps(v) for k, v in (meta or {}).items()})
    onnx.save(model, str(path))
    return path


def test_foreign_damaged_missing_and_partial_graphs_say_so(tmp_path):
    cases = [
        (_identity(tmp_path / "foreign.onnx"), "is not a graph written by `metauas export`"),
        (
            _identity(tmp_path / "head.onnx", {"format": "metauas-graph/1", "graph": "head", "size": 64}),
            "is the head part of an export: load the main graph",
        ),
        (tmp_path / "missing.onnx", "graph not found"),
    ]
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not a protobuf")
    cases.append((tmp_path / "broken.onnx", "is corrupt or not a graph onnxruntime can load"))
    (tmp_path / "alone.xml").write_text("<net/>")
    cases.append((tmp_path / "alone.xml", "its weights alone.bin are missing beside it"))
    for path, message in cases:
        with pytest.raises(UserError, match=message):
            metauas.load(path)
    full = _identity(
        tmp_path / "full.onnx",
        {
            "format": "metauas-graph/1",
            "graph": "full",
            "size": 64,
            "prompt_cached": True,
            "graphs": {"encoder": "gone.onnx"},
        },
    )
    with pytest.raises(UserError, match="names no encoder and head graphs"):
        metauas.load(full)
    plain = _identity(tmp_path / "plain.onnx", {"format": "metauas-graph/1", "graph": "full", "size": 64})
    assert metauas.load(plain).method == "model"  # written before graphs named their method
    with pytest.raises(UserError, match="computes the model map: method .lookup. needs a graph exported"):
        metauas.load(plain, method="lookup")
    with pytest.raises(UserError, match="takes 64 px inputs"):
        metauas.load(plain, size=128)
    odd = {"format": "metauas-graph/1", "graph": "full", "size": 64, "method": {"name": "vibes"}}
    with pytest.raises(UserError, match="metadata method must name model, lookup or mix"):
        metauas.load(_identity(tmp_path / "odd.onnx", odd))


def test_the_graph_path_imports_no_torch(tmp_path):
    _identity(tmp_path / "foreign.onnx")
    proc = run_without_torch(
        tmp_path,
        """
        import metauas, metauas.inference.runtime, metauas.inference.predict, metauas.cli
        try:
            metauas.load("foreign.onnx")
        except Exception as err:
            print(type(err).__name__, err)
        assert "torch" not in sys.modules
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "UserError foreign.onnx is not a graph written by `metauas export`" in proc.stdout
    cv2.imwrite(str(tmp_path / "p.png"), np.full((32, 32, 3), 128, np.uint8))
    images = ["--prompt", "p.png", "--query", "p.png"]
    proc = run_without_torch(tmp_path, cli("predict", "--checkpoint", "missing.onnx", *images, "--out", "o"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ["error: graph not found: missing.onnx"]
    proc = run_without_torch(tmp_path, cli("predict", "--checkpoint", "model.pt", *images, "--out", "o"))
    assert proc.returncode == 2 and "pip install 'metauas[torch]'" in proc.stderr


def test_a_missing_runtime_names_its_extra(tmp_path):
    import subprocess
    import sys

    _identity(tmp_path / "model.onnx")
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # as if not installed
        "from metauas.cli import main\n"
        "sys.exit(main(['predict', '--checkpoint', 'model.onnx', '--prompt', 'p.png', '--query', 'p.png', "
        "'--out', 'o']))\n"
    )
    cv2.imwrite(str(tmp_path / "p.png"), np.full((32, 32, 3), 128, np.uint8))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: this graph runs on onnxruntime, which is not installed: pip install 'metauas[onnx]'"
    ]


GOOD = {"format": "metauas-graph/1", "graph": "full", "size": 64}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("size", "64", "metadata size must be a whole number of pixels"),
        ("size", 10**9, "metadata size must be a whole number of pixels from 32 to 4096"),
        ("graph", ["full"], "metadata graph must be full, encoder or head"),
        ("checkpoint", [1], "metadata checkpoint must be an object"),
        ("checkpoint", {"size": -1}, "metadata checkpoint.size must be a whole number"),
        ("prompt_cached", "yes", "prompt_cached true or false"),
        ("shots", 0, r"metadata shots must be a whole number in 1\.\.64"),
        ("shots", True, r"metadata shots must be a whole number in 1\.\.64"),
        ("shots", 10**6, r"metadata shots must be a whole number in 1\.\.64"),
        ("graphs", {"encoder": "../../e.onnx", "head": "h.onnx"}, r"graphs.encoder '../../e.onnx' cannot be a file"),
        ("threshold", float("nan"), r"a threshold must be a number in \[0, 1\]"),
        ("input", "[" * 100_000, "metadata metauas.input is not valid JSON"),  # nested beyond reason
    ],
)
def test_hostile_metadata_is_one_line(tmp_path, field, value, message):
    """A graph's metadata decides which files open beside it and what size images are
    resized to: typed and bounded before use, one line each (issue 21)."""
    from onnx import helper

    path = _identity(tmp_path / "model.onnx", GOOD)
    model = onnx.load(str(path))
    raw = value if field == "input" else json.dumps(value)
    helper.set_model_props(model, {**{f"metauas.{k}": json.dumps(v) for k, v in GOOD.items()}, f"metauas.{field}": raw})
    onnx.save(model, str(path))
    with pytest.raises(UserError, match=message) as err:
        metauas.load(path)
    assert "\n" not in str(err.value)
