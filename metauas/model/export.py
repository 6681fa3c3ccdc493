"""`metauas export`: a checkpoint as ONNX graphs for deployment, verified with onnxruntime.

Graphs (opset 18, torch's dynamo exporter, float32, the checkpoint's input size):
- `<name>.onnx`: `prompt`, `query` (B x 3 x S x S, RGB in [0, 1]) -> `map` (B x 1 x S x S,
  anomaly probability). The batch axis is dynamic; prompt and query batches are equal.
- with `cached_prompt`, also `<name>-prompt.onnx`: `prompt` (1 x 3 x S x S) -> `stage0`..
  `stage4` (the frozen encoder's features), and `<name>-query.onnx`: `stage0`..`stage4`
  (batch 1) + `query` (B x 3 x S x S, dynamic B) -> `map`: encode the normal image once,
  then pay only the query's encoder pass and the decoder per image.
Each graph is run with onnxruntime on the same inputs as PyTorch right after export; a
difference above `tolerance` is an error, so a written file is a checked file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metauas.errors import UserError
from metauas.model.network import MetaUAS

OPSET = 18
STAGES = tuple(f"stage{i}" for i in range(5))


class FullGraph(nn.Module):
    def __init__(self, model: MetaUAS) -> None:
        super().__init__()
        self.model = model

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(prompt, query))


class PromptGraph(nn.Module):
    def __init__(self, model: MetaUAS) -> None:
        super().__init__()
        self.model = model

    def forward(self, prompt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode(prompt))


class QueryGraph(nn.Module):
    def __init__(self, model: MetaUAS) -> None:
        super().__init__()
        self.model = model

    def forward(self, stage0, stage1, stage2, stage3, stage4, query: torch.Tensor) -> torch.Tensor:
        prompt_feats = [stage0, stage1, stage2, stage3, stage4]
        return torch.sigmoid(self.model.segment(prompt_feats, self.model.encode(query), size=query.shape[-2:]))


@dataclass
class Exported:
    path: Path
    max_abs_diff: float  # onnxruntime vs PyTorch on the check inputs


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("export checks its graphs with onnxruntime: pip install 'metauas[export]'") from None
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _export(
    graph: nn.Module,
    args: tuple,
    names: list[str],
    outputs: list[str],
    path: Path,
    dynamic: dict[str, dict[int, object]],
    tolerance: float,
) -> Exported:
    """Export one graph (eval mode: torch restores the wrapper's mode after exporting),
    then compare onnxruntime with PyTorch on `args` with the batch doubled."""
    graph.eval()
    try:
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ImportError:
        raise UserError("export needs onnx and onnxscript: pip install 'metauas[export]'") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        diff = _write_and_check(graph, args, names, outputs, tmp, dynamic)
        # `not diff <= tolerance`: NaN compares false with everything, and must fail the check
        if not diff <= tolerance:
            raise UserError(
                f"the ONNX graph {path.name} differs from PyTorch by {diff:.2e} (> {tolerance:g}); not written"
            )
        tmp.replace(path)
    finally:  # a failed check, a full disk, an exporter error: no temporary file stays
        tmp.unlink(missing_ok=True)
    return Exported(path, diff)


def _write_and_check(graph, args: tuple, names: list[str], outputs: list[str], tmp: Path, dynamic: dict) -> float:
    """Export `graph` to `tmp`, run it with onnxruntime on `args` with the batch doubled,
    and return the largest difference from PyTorch's outputs (NaN if either has one)."""
    shapes = {name: dynamic.get(name) for name in names}
    torch.onnx.export(
        graph,
        args,
        str(tmp),
        input_names=names,
        output_names=outputs,
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=tuple(shapes.values()),
        external_data=False,
    )
    check = tuple(torch.cat([a, torch.rand_like(a)]) if name in dynamic else a for a, name in zip(args, names))
    with torch.no_grad():
        expected = graph(*check)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = _session(tmp)
    feed = {n: a.numpy() for n, a in zip(names, check)}
    got = session.run(outputs, {i.name: feed[i.name] for i in session.get_inputs()})
    diffs = [(torch.from_numpy(g) - e).abs() for g, e in zip(got, expected)]
    if not all(torch.isfinite(d).all() for d in diffs):
        return float("nan")  # max() of floats would drop a NaN depending on where it stands
    return max(float(d.max()) for d in diffs)


def export_onnx(
    model: MetaUAS, out: Path, size: int, cached_prompt: bool = False, tolerance: float = 1e-4
) -> list[Exported]:
    """Write and check the graphs described in the module docstring."""
    model = model.eval().float()
    batch = torch.export.Dim("batch", min=1)
    prompt, query = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    done = [
        _export(
            FullGraph(model),
            (prompt, query),
            ["prompt", "query"],
            ["map"],
            out,
            {"prompt": {0: batch}, "query": {0: batch}},
            tolerance,
        )
    ]
    if cached_prompt:
        one = prompt[:1]
        done.append(
            _export(
                PromptGraph(model),
                (one,),
                ["prompt"],
                list(STAGES),
                out.with_name(f"{out.stem}-prompt.onnx"),
                {},
                tolerance,
            )
        )
        with torch.no_grad():
            feats = tuple(model.encode(one))
        done.append(
            _export(
                QueryGraph(model),
                (*feats, query),
                [*STAGES, "query"],
                ["map"],
                out.with_name(f"{out.stem}-query.onnx"),
                {"query": {0: batch}},
                tolerance,
            )
        )
    return done
