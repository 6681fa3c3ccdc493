"""Exported graphs as the Segmenter's backend: onnxruntime or OpenVINO, no torch imported.

`metauas.load("model.onnx")` (or `model.xml`) reads the graph's metadata (size, score
rule, threshold, whether encoder + head graphs exist: `model/graphs.py`) and returns
the same `Segmenter` as a checkpoint does. Two ways to run:
- encoder + head (exported with `--cached-prompt`): prompts are encoded once, each query
  is encoded, its closest prompt chosen by global features exactly as the PyTorch path
  chooses, then the head runs; several prompts work as with a checkpoint;
- the full graph alone: the prompt image goes through the graph with every query (a
  single prompt, or leave-one-out over two).
A graph compares each query with the number of prompt views it was exported for
(`metauas export --shots K`, metadata `shots`): K = 1 by default; K-shot fusion (every
normal image with `use_all`, or prompt rotations, as more shots) needs a graph exported
with that K, fused inside it as the PyTorch path fuses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metauas.errors import UserError
from metauas.inference.frame import check_finite
from metauas.model.graphs import Graph


def shots_error(graph: int, given: int) -> UserError:
    """The one message for a prompt-view count the graph was not exported for."""
    return UserError(
        "this graph compares each query with {graph} prompt view(s) (`shots`, fixed at export), not {given} "
        "(the normal images with use_all, times the prompt rotations): export it again with "
        "`metauas export --shots {given}`, or use the PyTorch checkpoint".format(graph=graph, given=given)
    )


def _tile(arrays: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Batch-1 prompt arrays repeated to the queries' batch (the graphs take equal batches)."""
    return [np.repeat(a, n, axis=0) if len(a) == 1 and n > 1 else a for a in arrays]


class GraphBackend:
    """A `Segmenter` backend over one exported model (see the module docstring); its
    `method` is what the graph computes (the model, the lookup or their blend: metadata)."""

    device = "cpu"

    def __init__(self, path: Path, size: int | None = None, threads: int | None = None) -> None:
        self.full = Graph(path, threads)
        self.runtime, self.source = self.full.runtime, str(path)
        meta = self.full.meta
        if meta.get("graph") != "full":
            raise UserError(
                f"{path} is the {meta.get('graph')} part of an export: load the main graph "
                f"(the file named without -{meta.get('graph')})"
            )
        self.method: str = meta["method"]["name"]
        self.shots = int(meta["shots"])  # prompt views per query, fixed in the graph
        self.size = int(meta["size"])
        if size is not None and size != self.size:
            raise UserError(f"{path} takes {self.size} px inputs (fixed at export): drop `size` or export at {size}")
        self.meta = {**meta, "size": int(meta.get("checkpoint", {}).get("size", self.size))}
        self.encoder: Graph | None = None
        self.head: Graph | None = None
        if meta.get("prompt_cached"):
            parts = {role: path.with_name(name) for role, name in meta.get("graphs", {}).items()}
            if set(parts) != {"encoder", "head"}:
                raise UserError(f"{path}: metadata says prompt_cached but names no encoder and head graphs")
            self.encoder, self.head = Graph(parts["encoder"], threads), Graph(parts["head"], threads)

    @property
    def threshold(self) -> float | None:
        """The decision threshold stored at export, if any."""
        return self.full.meta.get("threshold")

    def encode(self, batch: np.ndarray) -> list[np.ndarray]:
        """Encoder stages; without an encoder graph the images themselves (the full graph encodes)."""
        if self.encoder is None:
            return [batch]
        out = self.encoder.run({"image": batch})
        return [out[name] for name in self.encoder.outputs]

    @staticmethod
    def concat(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate(stage) for stage in zip(*parts)]

    def vectors(self, feats: list[np.ndarray]) -> np.ndarray:
        """N x C unit vectors: the last stage averaged over positions (as `prompts.pooled`)."""
        if self.encoder is None:
            raise UserError(
                "choosing among several prompts needs the encoder graph: export with the prompt cached "
                "(`metauas export --cached-prompt`), or give one prompt"
            )
        v = feats[-1].mean(axis=(2, 3))
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def maps(self, prompt_feats: list[list[np.ndarray]], query_feats: list[np.ndarray]) -> np.ndarray:
        """`prompt_feats`: per shot, stages with batch 1 (shared) or N; K > 1 shots go to
        the graph stacked on axis 1 (N x K x ...)."""
        if len(prompt_feats) != self.shots:
            raise shots_error(self.shots, len(prompt_feats))
        n = len(query_feats[0])
        views = [_tile(shot, n) for shot in prompt_feats]
        prompt = views[0] if self.shots == 1 else [np.stack(stage, axis=1) for stage in zip(*views)]
        if self.head is None:  # one graph: images in, map out
            out = self.full.run({"prompt": prompt[0], "query": query_feats[0]})["map"][:, 0]
        else:
            feed = {f"prompt{i}": p for i, p in enumerate(prompt)} | {f"query{i}": q for i, q in enumerate(query_feats)}
            out = self.head.run(feed)["map"][:, 0]
        check_finite(bool(np.isfinite(out).all()), self.method)
        return out


def load_graph_backend(path: Path, size: int | None, device: str = "auto") -> GraphBackend:
    """The backend for an exported graph; exported graphs run on the CPU here."""
    if device not in ("auto", "cpu"):
        raise UserError(
            f"exported graphs run on the CPU (onnxruntime / OpenVINO CPU plugin): `device` {device} "
            "is for PyTorch checkpoints"
        )
    return GraphBackend(path, size)
