"""Exported graphs as files a deployment reads: their metadata and a runner, without torch.

`metauas export` writes ONNX files (onnxruntime) or OpenVINO IR (model.xml + model.bin).
Each carries what a runtime needs to use it correctly, inside the file: ONNX
`metadata_props` / OpenVINO `rt_info`, keys `metauas.<name>`, values JSON:

    format         "metauas-graph/1"
    version        the metauas version that wrote it
    graph          full | encoder | head (what the file computes, see model/export.py)
    size           the input side S: inputs are N x 3 x S x S
    input          layout, colour order, dtype, range and the resize rule
    normalisation  the encoder's mean / std, applied inside the graph (feed [0, 1] RGB)
    score_rule     how an image score is taken from the map (max in the model's frame)
    method         what the map is: {"name": "model"} (the trained model), or "lookup" /
                   "mix" with their settings ("lookup", "mix_weight"); absent in graphs
                   written before it (then "model")
    threshold      a decision threshold fitted for this model, or null
    prompt_cached  whether encoder + head graphs exist beside the full graph, so the
                   normal image is encoded once and queries pay only their own pass
    shots          K, how many prompt views each query is compared with at once (normal
                   images with use_all, times prompt rotations), fused inside the graph;
                   prompt inputs carry them on axis 1 when K > 1; absent in graphs
                   written before it (then 1)
    graphs         the file names of the encoder and head graphs (when prompt_cached)
    checkpoint     step, training size and encoder of the source checkpoint

`Graph` runs one file on onnxruntime or OpenVINO's CPU plugin in float32 (OpenVINO's
default CPU precision here is bfloat16, three digits: scores would move by ~1e-3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metauas.errors import UserError

FORMAT = "metauas-graph/1"
PREFIX = "metauas."
KEYS = (
    "format",
    "version",
    "graph",
    "size",
    "input",
    "normalisation",
    "score_rule",
    "method",
    "threshold",
    "prompt_cached",
    "shots",
    "graphs",
    "checkpoint",
)
MAX_SHOTS = 64  # prompt views per query one graph may take (export refuses more; so does a file)
RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino"}
EXTRA = {"onnxruntime": "onnx", "openvino": "openvino"}  # the pyproject extra that installs each


def _import(runtime: str):
    try:
        if runtime == "onnxruntime":
            import onnxruntime

            return onnxruntime
        import openvino

        return openvino
    except ImportError:
        raise UserError(
            f"this graph runs on {runtime}, which is not installed: pip install 'metauas[{EXTRA[runtime]}]'"
        ) from None


def decode_metadata(raw: dict[str, str], path: Path) -> dict:
    """Our keys of a graph's metadata, JSON-decoded; a graph without them is not ours."""
    meta = {}
    for key, value in raw.items():
        if key.startswith(PREFIX):
            try:
                meta[key[len(PREFIX) :]] = json.loads(value)
            except (TypeError, ValueError, RecursionError):  # RecursionError: nested beyond reason
                raise UserError(f"{path}: metadata {key} is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise UserError(
            f"{path} is not a graph written by `metauas export` (no {PREFIX}format = {FORMAT} in "
            "its metadata): export the checkpoint with metauas export"
        )
    meta.setdefault("method", {"name": "model"})  # graphs written before they named their method
    meta.setdefault("shots", 1)  # graphs written before they took several prompt views
    _check_fields(meta, path)
    return meta


def _check_fields(meta: dict, path: Path) -> None:
    """The fields a runtime decides on, typed and bounded before any is used: a file
    anyone may hand over says which files to open beside it and what size to resize to."""
    from metauas.model.config import check_side
    from metauas.outputs import plain_name

    if meta.get("graph") not in ("full", "encoder", "head"):
        raise UserError(f"{path}: metadata graph must be full, encoder or head, got {meta.get('graph')!r}")
    check_side(meta.get("size"), f"{path}: metadata size")
    checkpoint = meta.get("checkpoint", {})
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: metadata checkpoint must be an object, got {checkpoint!r:.80}")
    if "size" in checkpoint:
        check_side(checkpoint["size"], f"{path}: metadata checkpoint.size")
    method = meta["method"]
    if not isinstance(method, dict) or method.get("name") not in ("model", "lookup", "mix"):
        raise UserError(f"{path}: metadata method must name model, lookup or mix, got {method!r:.80}")
    shots = meta["shots"]
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
        raise UserError(f"{path}: metadata shots must be a whole number in 1..{MAX_SHOTS}, got {shots!r:.80}")
    graphs = meta.get("graphs", {})
    if not isinstance(graphs, dict) or not isinstance(meta.get("prompt_cached", False), bool):
        raise UserError(f"{path}: metadata graphs must be an object and prompt_cached true or false")
    for role, name in graphs.items():
        plain_name(name, f"{path}: metadata graphs.{role}")  # a file beside this one, never elsewhere


class Graph:
    """One exported graph file on its runtime: `run(feed)` -> outputs by name (float32)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.runtime = RUNTIMES.get(self.path.suffix.lower())
        if self.runtime is None:
            raise UserError(f"{path}: an exported graph ends in .onnx (onnxruntime) or .xml (OpenVINO)")
        if not self.path.is_file():
            raise UserError(f"graph not found: {path}")
        if self.runtime == "openvino" and not self.path.with_suffix(".bin").is_file():
            raise UserError(f"{path}: its weights {self.path.with_suffix('.bin').name} are missing beside it")
        try:
            raw = self._open_onnx(threads) if self.runtime == "onnxruntime" else self._open_openvino(threads)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - any file may be passed; runtimes raise many kinds
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise UserError(f"{path} is corrupt or not a graph {self.runtime} can load ({first})") from None
        self.meta = decode_metadata(raw, self.path)

    def _open_onnx(self, threads: int | None) -> dict[str, str]:
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers on stderr
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _open_openvino(self, threads: int | None) -> dict[str, str]:
        ov = _import("openvino")
        core = ov.Core()
        model = core.read_model(str(self.path))
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        self.compiled = core.compile_model(model, "CPU", config)
        self.inputs = [i.get_any_name() for i in model.inputs]
        self.outputs = [o.get_any_name() for o in model.outputs]
        section = PREFIX.rstrip(".")
        return {
            PREFIX + k: model.get_rt_info([section, k]).astype(str) for k in KEYS if model.has_rt_info([section, k])
        }

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs for `feed` (input name -> float32 array)."""
        feed = {name: np.ascontiguousarray(feed[name], np.float32) for name in self.inputs}
        if self.runtime == "onnxruntime":
            return dict(zip(self.outputs, self.session.run(self.outputs, feed)))
        result = self.compiled(feed)
        return {name: np.asarray(result[self.compiled.output(name)]) for name in self.outputs}


def read_metadata(path: Path) -> dict:
    """A graph file's metauas metadata (loads the graph: the file is checked too)."""
    return Graph(path).meta
