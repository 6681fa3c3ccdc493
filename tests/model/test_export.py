"""`metauas export --format onnx|openvino`: graphs with their metadata inside, loaded back
by `metauas.load` and `predict` on onnxruntime / OpenVINO (no torch on that path), equal
to PyTorch on real photographs within 1e-4."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data

import metauas
from metauas.cli import main
from metauas.errors import UserError

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The offline ImageNet lite0 encoder with a small random decoder: real features, so
    maps and prompt choices differ from image to image (an all-random model's are flat)."""
    import torch
    from make_data import tiny_model_config

    from metauas.model.checkpoint import save_checkpoint
    from metauas.model.config import EncoderConfig
    from metauas.model.network import MetaUAS

    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config(encoder=EncoderConfig(weights="offline")))
    return save_checkpoint(tmp_path_factory.mktemp("pre") / "pre.pt", model, size=64, step=7)


@pytest.fixture(scope="module")
def exported(pretrained, tmp_path_factory):
    """model.onnx (the full graph alone) and model.xml with --cached-prompt (encoder + head)."""
    out = tmp_path_factory.mktemp("graphs")
    assert (
        main(["export", "--checkpoint", str(pretrained), "--out", str(out / "model.onnx"), "--threshold", "0.3"]) == 0
    )
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(pretrained),
                "--format",
                "openvino",
                "--cached-prompt",
                "--out",
                str(out / "model.xml"),
            ]
        )
        == 0
    )
    return out


def _photos(folder):
    """Real photographs on disk: prompts (two scenes) and queries (changed copies, another scene)."""
    folder.mkdir(exist_ok=True)
    astronaut, chelsea, coffee = skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()
    changed = astronaut.copy()
    changed[150:260, 180:300] = (20, 200, 40)
    files = {
        "prompts/astronaut.png": astronaut,
        "prompts/chelsea.png": chelsea,
        "queries/a_changed.png": changed,
        "queries/b_chelsea_flip.png": chelsea[:, ::-1],
        "queries/c_coffee.png": coffee,
        "normals/n1.png": cv2.GaussianBlur(astronaut, (3, 3), 0),
        "normals/n2.png": chelsea[10:, 10:],
    }
    for name, rgb in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / name), np.ascontiguousarray(rgb[..., ::-1]))
    return folder


@pytest.mark.slow  # four dynamo exports, several minutes on 2 cores
def test_graphs_carry_their_metadata(exported):
    import onnx
    import openvino as ov

    props = {p.key: json.loads(p.value) for p in onnx.load(str(exported / "model.onnx")).metadata_props}
    assert props["metauas.format"] == "metauas-graph/1" and props["metauas.size"] == 64
    assert props["metauas.threshold"] == 0.3 and props["metauas.prompt_cached"] is False
    assert props["metauas.normalisation"]["mean"] == pytest.approx([0.5, 0.5, 0.5])
    assert "max of the map" in props["metauas.score_rule"] and props["metauas.version"] == metauas.__version__
    model = ov.Core().read_model(str(exported / "model.xml"))
    assert json.loads(model.get_rt_info(["metauas", "graphs"]).astype(str)) == {
        "encoder": "model-encoder.xml",
        "head": "model-head.xml",
    }
    assert json.loads(model.get_rt_info(["metauas", "checkpoint"]).astype(str))["step"] == 7
    assert sorted(p.name for p in exported.iterdir()) == [
        "model-encoder.bin",
        "model-encoder.xml",
        "model-head.bin",
        "model-head.xml",
        "model.bin",
        "model.onnx",
        "model.xml",
    ]  # no temporary files left


@pytest.mark.slow
def test_the_segmenter_on_each_runtime_matches_pytorch_on_photographs(pretrained, exported, tmp_path):
    photos = _photos(tmp_path)
    queries = sorted((photos / "queries").glob("*.png"))
    torch_model = metauas.load(pretrained, device="cpu")
    onnx_model, ov_model = metauas.load(exported / "model.onnx"), metauas.load(exported / "model.xml")
    assert onnx_model.threshold == 0.3 and ov_model.threshold is None  # stored at export, or not
    assert repr(ov_model).startswith("Segmenter(method='mix', runtime='openvino', size=64")
    one = photos / "prompts/astronaut.png"
    expected = torch_model.segment(queries, prompt=one)
    for graph in (onnx_model, ov_model):
        got = graph.segment(queries, prompt=one)
        assert max(abs(a.score - b.score) for a, b in zip(expected, got)) <= 1e-4
        assert max(float(np.abs(a.map - b.map).max()) for a, b in zip(expected, got)) <= 1e-4
    both = sorted((photos / "prompts").glob("*.png"))  # the closest prompt per query: the encoder graph
    expected = torch_model.segment(queries, prompt=both)
    got = ov_model.segment(queries, prompt=both)
    assert [r.prompts for r in got] == [r.prompts for r in expected] and {r.prompts for r in got} == {(0,), (1,)}
    assert max(abs(a.score - b.score) for a, b in zip(expected, got)) <= 1e-4
    assert abs(ov_model.fit_threshold(photos / "normals") - torch_model.fit_threshold(photos / "normals")) <= 1e-4
    with pytest.raises(UserError, match="needs the encoder graph: export with the prompt cached"):
        onnx_model.segment(queries[0], prompt=both)
    with pytest.raises(UserError, match=r"1 prompt view\(s\).*not 2 .*metauas export --shots 2"):
        ov_model.set_prompts(*both, use_all=True).segment(queries[0])


@pytest.mark.slow  # two dynamo exports of the tiny model
def test_graphs_exported_for_k_shots_fuse_them_like_pytorch(pretrained, tmp_path):
    """`export --shots K`: K prompt views per query (prompt rotations, or every normal
    image with use_all) fused inside the graph as PyTorch fuses them, within 1e-4 on
    photographs, with the prompt cached (encoder + head) and in the full graph alone; a
    graph given another number of views says which export it needs."""
    photos = _photos(tmp_path / "photos")
    queries = sorted((photos / "queries").glob("*.png"))
    astronaut, both = photos / "prompts/astronaut.png", sorted((photos / "prompts").glob("*.png"))
    rotations = (0, 90, 180, 270)
    cached, full = tmp_path / "k4.onnx", tmp_path / "k2.xml"
    assert (
        main(["export", "--checkpoint", str(pretrained), "--out", str(cached), "--cached-prompt", "--shots", "4"]) == 0
    )
    assert (
        main(["export", "--checkpoint", str(pretrained), "--out", str(full), "--format", "openvino", "--shots", "2"])
        == 0
    )
    torch_model = metauas.load(pretrained, device="cpu")
    for graph, prompts, kwargs in ((cached, [astronaut], {"rotations": rotations}), (full, both, {"use_all": True})):
        expected = torch_model.set_prompts(*prompts, **kwargs).segment(queries)
        got = metauas.load(graph).set_prompts(*prompts, **kwargs).segment(queries)
        assert max(abs(a.score - b.score) for a, b in zip(expected, got)) <= 1e-4
        assert max(float(np.abs(a.map - b.map).max()) for a, b in zip(expected, got)) <= 1e-4
    one_view = torch_model.segment(queries, prompt=astronaut)
    rotated = metauas.load(cached).set_prompts(astronaut, rotations=rotations).segment(queries)
    assert max(float(np.abs(a.map - b.map).max()) for a, b in zip(one_view, rotated)) > 1e-3  # the views count
    with pytest.raises(UserError, match=r"4 prompt view\(s\).*not 1 .*metauas export --shots 1"):
        metauas.load(cached).segment(queries[0], prompt=astronaut)


@pytest.mark.slow
def test_a_mix_graph_blends_model_and_lookup_inside_like_pytorch(pretrained, tmp_path):
    """`export --method mix`: the lookup (on its own encoder) and the blend are in the
    graphs, so the mix map deploys without torch; the graph names its method and refuses
    another one."""
    import onnx

    out = tmp_path / "mix.onnx"
    args = ["export", "--checkpoint", str(pretrained), "--out", str(out), "--cached-prompt"]
    assert main([*args, "--method", "mix", "--mix-weight", "0.6"]) == 0  # not the default weight
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["metauas.method"]["name"] == "mix" and props["metauas.method"]["mix_weight"] == 0.6
    assert props["metauas.method"]["lookup"]["stages"] == [2, 3]
    # the lookup on its own encoder (lite2): the encoder graph gives its five stages and the model's five
    assert props["metauas.method"]["lookup"]["encoder"] == "tf_efficientnet_lite2"
    encoder_graph = onnx.load(str(out.with_name("mix-encoder.onnx")))
    assert [o.name for o in encoder_graph.graph.output] == [f"stage{i}" for i in range(10)]
    photos = _photos(tmp_path / "photos")
    queries = sorted((photos / "queries").glob("*.png"))
    torch_mix = metauas.load(pretrained, method="mix", mix_weight=0.6, device="cpu")
    torch_model = metauas.load(pretrained, method="model", device="cpu")
    graph = metauas.load(out)
    assert graph.method == "mix"
    for prompt in (photos / "prompts/astronaut.png", sorted((photos / "prompts").glob("*.png"))):
        expected, got = torch_mix.segment(queries, prompt=prompt), graph.segment(queries, prompt=prompt)
        assert max(abs(a.score - b.score) for a, b in zip(expected, got)) <= 1e-4
        assert max(float(np.abs(a.map - b.map).max()) for a, b in zip(expected, got)) <= 1e-4
        model_only = torch_model.segment(queries, prompt=prompt)
        assert max(float(np.abs(a.map - b.map).max()) for a, b in zip(model_only, got)) > 1e-2  # not the model's
    with pytest.raises(UserError, match="computes the mix map"):
        metauas.load(out, method="model")


def predict_args(checkpoint, photos, out) -> list[str]:
    """`predict --threshold auto --normals` on the photographs, maps as float32 .npy."""
    return [
        "predict",
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        str(photos / "prompts/astronaut.png"),
        "--query",
        str(photos / "queries"),
        "--out",
        str(out),
        "--threshold",
        "auto",
        "--normals",
        str(photos / "normals"),
        "--map-format",
        "npy",
        "--no-progress",
    ]


def _records(out) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def _predict(checkpoint, photos, out) -> list[dict]:
    assert main(predict_args(checkpoint, photos, out)) == 0
    return _records(out)


def same_predictions(expected: list[dict], got: list[dict], out_a, out_b) -> None:
    """Equal decisions and thresholds, maps within 1e-4, masks equal away from the threshold."""
    for a, b in zip(expected, got, strict=True):
        assert a["anomalous"] == b["anomalous"] and abs(a["threshold"] - b["threshold"]) <= 1e-4
        assert abs(a["score"] - b["score"]) <= 1e-4
        map_a, map_b = np.load(out_a / a["map"]), np.load(out_b / b["map"])
        assert np.abs(map_a - map_b).max() <= 1e-4
        mask_a, mask_b = (cv2.imread(str(o / r["mask"]), cv2.IMREAD_GRAYSCALE) for o, r in ((out_a, a), (out_b, b)))
        assert ((mask_a != mask_b) <= (np.abs(map_a - a["threshold"]) < 1e-4)).all()


@pytest.mark.slow
def test_predict_on_a_graph_writes_what_the_checkpoint_writes_without_importing_torch(pretrained, exported, tmp_path):
    from test_extras import run_without_torch

    photos = _photos(tmp_path)
    expected = _predict(pretrained, photos, tmp_path / "torch")
    for graph in ("model.onnx", "model.xml"):
        out = tmp_path / graph.replace(".", "-")
        args = predict_args(exported / graph, photos, out)
        proc = run_without_torch(
            tmp_path,
            f"from metauas.cli import main\nrc = main({args!r})\nassert 'torch' not in sys.modules\nsys.exit(rc)\n",
        )
        assert proc.returncode == 0, proc.stderr
        got = _records(out)
        same_predictions(expected, got, tmp_path / "torch", out)


def test_export_refuses_a_wrong_output_name(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "model.pt")]) == 2
    assert "--format onnx writes a file name ending in .onnx" in capsys.readouterr().err
    assert (
        main(["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "model.onnx")])
        == 2
    )
    assert "--format openvino writes a file name ending in .xml" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--threshold", "2"]) == 2
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err


def _fresh_venv_without_torch(tmp_path):
    """A new virtual environment with this checkout installed as `metauas[onnx,openvino]`
    (copied first: an install must not write into the working tree), and no torch."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    shutil.copytree(root / "metauas", src / "metauas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", f"{src}[onnx,openvino]"], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = subprocess.run([str(venv / "bin/python"), "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in probe.stderr
    return venv


@pytest.mark.slow  # a pip install into a new environment: a minute or more
def test_a_fresh_install_without_torch_predicts_like_the_checkpoint(pretrained, exported, tmp_path):
    import subprocess

    venv = _fresh_venv_without_torch(tmp_path)
    photos = _photos(tmp_path / "photos")
    expected = _predict(pretrained, photos, tmp_path / "torch")
    for graph in ("model.onnx", "model.xml"):
        out = tmp_path / graph.replace(".", "-")
        proc = subprocess.run(
            [str(venv / "bin/metauas"), *predict_args(exported / graph, photos, out)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        got = _records(out)
        same_predictions(expected, got, tmp_path / "torch", out)


@pytest.mark.slow  # one dynamo export of a tiny model, about 20 s on 2 cores
def test_the_parity_check_fails_on_nan(tmp_path):
    """A model whose maps are NaN (a NaN bias in its head) exports a graph that is NaN in
    both runtimes; NaN compares false with everything, so `diff > tol` passed it. The
    check fails it, and nothing is written."""
    import torch
    from make_data import tiny_model_config

    from metauas.model.export import export_graphs
    from metauas.model.network import MetaUAS

    model = MetaUAS(tiny_model_config())
    torch.nn.init.constant_(model.head.bias, float("nan"))
    with pytest.raises(UserError, match="differs from PyTorch by nan"):
        export_graphs(model, tmp_path / "nan.onnx", 64)
    assert list(tmp_path.iterdir()) == []
