"""`metauas export`: a checkpoint as ONNX or OpenVINO graphs for deployment without torch.

Graphs (opset 18, torch's dynamo exporter, float32, the checkpoint's input size S; the
batch axis N is dynamic; inputs are RGB in [0, 1], the encoder's normalisation is inside):
- `model.onnx` (full): `prompt`, `query` (N x 3 x S x S) -> `map` (N x 1 x S x S, anomaly
  probability). One normal image per query, encoded with it. Exported with `shots` K > 1,
  `prompt` is N x K x 3 x S x S: K views of the normal (several normal images, rotations)
  fused inside the graph as the PyTorch path fuses K shots (aligned features averaged;
  the lookup searches all K), and every head input `prompt<i>` likewise N x K x ....
- with `cached_prompt`, also `model-encoder.onnx`: `image` (N x 3 x S x S) -> `stage0`..
  `stage4` (the frozen encoder's features; `stage0`..`stage9` where a `mix` graph's lookup
  has its own encoder: its five stages, then the model's), and `model-head.onnx`:
  `prompt<i>`, `query<i>` for each stage (N each) -> `map`. The normal image is encoded once and its features
  reused for every query; with several normal images each query's own encoding picks the
  closest one (the PyTorch path's rule), which the full graph cannot.
What the map is, is the `head`'s choice: by default the trained model's probability; the
inference layer passes the module of another scoring method (`inference.scoring.
MethodHead`: the lookup baseline, or the `mix` blend of model and lookup, computed from
the features of the encoder passed with it inside the graph), named in the metadata's `method`.
OpenVINO IR is converted from the same ONNX graphs (`model.xml` + `model.bin`, float32
weights). Every file carries its metadata (`model/graphs.py`) and is run by its own
runtime on the same inputs as PyTorch right after export: a difference above
`tolerance` is an error, so a written file is a checked file. Files appear whole or not
at all (written under a temporary name, renamed last).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metauas.errors import UserError
from metauas.model.config import GRAPH_FORMATS, GraphFormat
from metauas.model.graphs import FORMAT, MAX_SHOTS, PREFIX, Graph
from metauas.model.network import MetaUAS

OPSET = 18
FORMATS = GRAPH_FORMATS
INPUT = {
    "layout": "NCHW",
    "colour": "RGB",
    "dtype": "float32",
    "range": [0, 1],
    "resize": "whole image to size x size: area interpolation when shrinking, bilinear when enlarging; no crop",
}
SCORE_RULE = "max of the map at size x size (the model's frame), before resizing the map to the image for display"


class ModelHead(nn.Module):
    """The trained model's anomaly probability from encoder features (the default head;
    any head maps (K shots' prompt stages, query stages, (H, W)) to N x 1 x H x W in
    [0, 1]; K shots fused as `Scorer.model_map` fuses them by default)."""

    method = {"name": "model"}

    def __init__(self, model: MetaUAS) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, shots: list[list[torch.Tensor]], query: list[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        return torch.sigmoid(self.model.segment(shots[0] if len(shots) == 1 else shots, query, size=size))


def _split_shots(prompt: list[torch.Tensor], shots: int) -> list[list[torch.Tensor]]:
    """Per shot, the stages: K = 1 takes the N x ... tensors as they are, K > 1 splits
    N x K x ... on axis 1 (a static count, so the export unrolls it)."""
    return [prompt] if shots == 1 else [[p[:, k] for p in prompt] for k in range(shots)]


def _encode(encoder: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [f.detach() for f in encoder(images)]


class FullGraph(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, shots: int = 1) -> None:
        super().__init__()
        self.encoder, self.head, self.shots = encoder, head, shots

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        views = torch.cat([view for (view,) in _split_shots([prompt], self.shots)])  # K x N images
        n = query.shape[0]
        feats = _encode(self.encoder, torch.cat([views, query]))  # one batched encoder pass
        shots = [[f[k * n : (k + 1) * n] for f in feats] for k in range(self.shots)]
        return self.head(shots, [f[self.shots * n :] for f in feats], tuple(query.shape[-2:]))


class EncoderGraph(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_encode(self.encoder, image))


class HeadGraph(nn.Module):
    """The head on prompt and query features (`stages` each), as `head_graph` names them."""

    def __init__(self, head: nn.Module, size: int, stages: int, shots: int = 1) -> None:
        super().__init__()
        self.head, self.size, self.shots, self.stages = head, size, shots, stages

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        prompt, query = list(features[: self.stages]), list(features[self.stages :])
        return self.head(_split_shots(prompt, self.shots), query, (self.size, self.size))


def head_graph(head: nn.Module, size: int, stages: int, shots: int = 1) -> HeadGraph:
    """A `HeadGraph` whose forward names its inputs `prompt0`.., `query0`..: torch.export
    matches dynamic shapes to named parameters one by one (not to `*features`), and the
    count is the encoder's (5, or 10 with a lookup on its own encoder), so the signature is
    made per count on a subclass."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = ["self"] + [f"{role}{i}" for role in ("prompt", "query") for i in range(stages)]

    def forward(self: HeadGraph, *features: torch.Tensor) -> torch.Tensor:
        return HeadGraph.forward(self, *features)

    setattr(forward, "__signature__", inspect.Signature([inspect.Parameter(n, kind) for n in names]))
    named = type(f"HeadGraph{stages}", (HeadGraph,), {"forward": forward})
    return named(head, size, stages, shots)


@dataclass
class Exported:
    path: Path
    max_abs_diff: float  # the runtime vs PyTorch on the check inputs


def metadata(
    model: MetaUAS,
    size: int,
    graph: str,
    threshold: float | None,
    cached: list[str],
    source: dict,
    method: dict,
    shots: int = 1,
) -> dict[str, str]:
    """The `metauas.*` keys of one graph (model/graphs.py lists them), JSON-encoded."""
    from metauas.version import __version__

    enc = model.encoder
    values = {
        "format": FORMAT,
        "version": __version__,
        "graph": graph,
        "size": size,
        "input": INPUT,
        "normalisation": {
            "mean": enc.mean.flatten().tolist(),
            "std": enc.std.flatten().tolist(),
            "where": "inside the graph: feed RGB in [0, 1]",
        },
        "score_rule": SCORE_RULE,
        "method": method,
        "threshold": threshold,
        "prompt_cached": bool(cached),
        "shots": shots,
        "graphs": dict(zip(("encoder", "head"), cached)),
        "checkpoint": {k: source[k] for k in ("step", "size", "encoder") if k in source},
    }
    return {PREFIX + k: json.dumps(v) for k, v in values.items()}


def _to_onnx(
    graph: nn.Module, args: tuple, names: list[str], outputs: list[str], path: Path, meta: dict[str, str]
) -> None:
    """torch.onnx.export (every input's axis 0 dynamic, one shared batch) + metadata."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ImportError:
        raise UserError("export needs onnx and onnxscript: pip install 'metauas[export]'") from None
    batch = torch.export.Dim("batch", min=1)
    graph.eval()
    with warnings.catch_warnings():  # one Dim shared by every input is the point, not a mistake
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=names,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=tuple({0: batch} for _ in names),
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


def _to_openvino(onnx_path: Path, xml: Path, meta: dict[str, str]) -> None:
    try:
        import openvino as ov
    except ImportError:
        raise UserError("an OpenVINO export needs openvino: pip install 'metauas[openvino]'") from None
    model = ov.convert_model(str(onnx_path))
    for key, value in meta.items():
        model.set_rt_info(value, [PREFIX.rstrip("."), key[len(PREFIX) :]])
    ov.save_model(model, str(xml), compress_to_fp16=False)  # float16 weights would cost parity


def _check(path: Path, graph: nn.Module, args: tuple, names: list[str], outputs: list[str], tolerance: float) -> float:
    """The runtime against PyTorch on `args` with the batch doubled (random second half)."""
    check = tuple(torch.cat([a, torch.rand_like(a) if a.min() >= 0 else torch.randn_like(a)]) for a in args)
    with torch.no_grad():
        expected = graph(*check)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = Graph(path).run({n: a.numpy() for n, a in zip(names, check)})
    diffs = [(torch.from_numpy(got[o]) - e).abs() for o, e in zip(outputs, expected)]
    # a NaN anywhere fails: `diff > tolerance` is False for NaN, and max() of floats drops
    # a NaN or not depending on where it stands
    finite = all(bool(torch.isfinite(d).all()) for d in diffs)
    diff = max(float(d.max()) for d in diffs) if finite else float("nan")
    if not diff <= tolerance:
        raise UserError(
            f"the exported graph {path.name} differs from PyTorch by {diff:.2e} (> {tolerance:g}); not written"
        )
    return diff


def _graphs(
    encoder: nn.Module, head: nn.Module, size: int, cached: bool, shots: int = 1
) -> list[tuple[str, nn.Module, tuple, list[str], list[str]]]:
    """(role, module, example inputs, input names, output names) of each graph to write."""
    views = [torch.rand(2, 3, size, size) for _ in range(shots)]
    prompt = views[0] if shots == 1 else torch.stack(views, dim=1)
    query = torch.rand(2, 3, size, size)
    graphs: list[tuple[str, nn.Module, tuple, list[str], list[str]]] = [
        ("full", FullGraph(encoder, head, shots), (prompt, query), ["prompt", "query"], ["map"])
    ]
    if cached:
        per_view, qf = [_encode(encoder, v) for v in views], _encode(encoder, query)
        pf = [f[0] if shots == 1 else torch.stack(f, dim=1) for f in zip(*per_view)]
        n = len(qf)
        heads = [f"prompt{i}" for i in range(n)] + [f"query{i}" for i in range(n)]
        graphs += [
            ("encoder", EncoderGraph(encoder), (views[0],), ["image"], [f"stage{i}" for i in range(n)]),
            ("head", head_graph(head, size, n, shots), (*pf, *qf), heads, ["map"]),
        ]
    return graphs


def export_graphs(
    model: MetaUAS,
    out: Path,
    size: int,
    fmt: GraphFormat = "onnx",
    cached_prompt: bool = False,
    threshold: float | None = None,
    source: dict | None = None,
    tolerance: float = 1e-4,
    head: nn.Module | None = None,
    shots: int = 1,
    encoder: nn.Module | None = None,
) -> list[Exported]:
    """Write and check the graphs described in the module docstring; `out` is the full
    graph's file (.onnx or .xml), the others are named after it. `head` (default: the
    model's own probability) has a `method` dict for the metadata and uses `model`;
    `shots`: how many prompt views each query is compared with at once (fixed in the graph);
    `encoder` (default: the model's) computes the features the head takes."""
    if not 1 <= shots <= MAX_SHOTS:
        raise UserError(f"`shots` must be in 1..{MAX_SHOTS}, got {shots}")
    model = model.eval().float()
    head = (head or ModelHead(model)).eval().float()
    encoder = (encoder or model.encoder).eval().float()
    method: dict = getattr(head, "method")  # any head module names its method (ModelHead, MethodHead)
    suffix = FORMATS[fmt]
    names = {
        "full": out,
        "encoder": out.with_name(f"{out.stem}-encoder{suffix}"),
        "head": out.with_name(f"{out.stem}-head{suffix}"),
    }
    cached = [names["encoder"].name, names["head"].name] if cached_prompt else []
    work = out.parent / f".{out.name}.export-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    done = []
    try:
        for role, graph, args, inputs, outputs in _graphs(encoder, head, size, cached_prompt, shots):
            meta = metadata(model, size, role, threshold, cached, source or {}, method, shots)
            onnx_path = work / f"{role}.onnx"
            _to_onnx(graph, args, inputs, outputs, onnx_path, meta)
            written = onnx_path if fmt == "onnx" else work / f"{role}.xml"
            if fmt == "openvino":
                _to_openvino(onnx_path, written, meta)
            done.append((written, Exported(names[role], _check(written, graph, args, inputs, outputs, tolerance))))
        for written, exported in done:  # all checked: now rename (the .bin before its .xml)
            if fmt == "openvino":
                os.replace(written.with_suffix(".bin"), exported.path.with_suffix(".bin"))
            os.replace(written, exported.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [exported for _, exported in done]
