"""Turning (prompt, query) images into anomaly maps, for the model and the lookup baseline.

Features are computed once per image and each method pays only its own head. The
baseline looks features up in its own frozen encoder (lite2 by default); where that is
not the model's, `mix` runs both encoders as one `PairedEncoder` whose feature list
carries both parts. Timing is kept per method and per encoder (each method counts the
encoders it uses) for the efficiency line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from metauas.data.images import read_image
from metauas.devices import describe
from metauas.errors import UserError
from metauas.inference.config import (
    METHOD_CHOICES,
    METHOD_SETS,
    METHODS,
    MIX_RULE,
    MIX_WEIGHT,
    SHARED_ENCODER,
    SHOT_FUSIONS,
    LookupConfig,
)
from metauas.inference.frame import check_finite, model_input
from metauas.inference.lookup import PairedEncoder, lookup_from_features, split_features

ENCODER_PARTS = ("encoder", "lookup encoder")  # `Scorer.seconds` keys: the model's (or only) encoder, a paired lookup's

if TYPE_CHECKING:  # loaded on use: the lookup baseline alone never builds the model
    from metauas.model.network import MetaUAS


@dataclass(frozen=True)
class Method:
    """One way of turning encoder features into an anomaly map.

    `compute(scorer, prompt_feats, query_feats, size, done)` returns B x 1 x H x W in
    [0, 1]; `done` holds the maps of `uses` already computed for the same batch, so a
    blend never runs its inputs twice. `needs_model`: the method needs a checkpoint."""

    name: str
    needs_model: bool
    uses: tuple[str, ...]
    compute: Callable[..., torch.Tensor]
    help: str


def _mix(scorer: Scorer, prompt_feats, query_feats, size, done) -> torch.Tensor:
    """model ** (1 - w) * lookup ** w: both maps lie in [0, 1], so the blend does too; at
    w = 0 it is the model's map and at w = 1 the lookup's (x ** 0 is 1, also for x = 0)."""
    w = scorer.mix_weight
    return done["model"].clamp(min=0) ** (1 - w) * done["lookup"].clamp(min=0) ** w


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("model", True, (), lambda s, p, q, size, done: s.model_map(p, q, tuple(size)), "the trained model"),
        Method(
            "lookup",
            False,
            (),
            lambda s, p, q, size, done: lookup_from_features(
                [s.part(f, "lookup") for f in p], s.part(q, "lookup"), size, s.lookup
            ),
            "training-free baseline",
        ),
        Method("mix", True, ("model", "lookup"), _mix, f"{MIX_RULE} (--mix-weight w)"),
    )
}
assert tuple(REGISTRY) == METHODS, "inference/config.py names the registry's methods for the CLI"


def load_tensor(path: Path, size: int) -> torch.Tensor:
    return to_tensor(read_image(path), size)


def to_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """3 x size x size float RGB in [0, 1]: the model's input rule (`frame.model_input`)."""
    return torch.from_numpy(model_input(rgb, size))


def uses_model(methods: Sequence[str]) -> bool:
    """Whether these methods need the trained model."""
    return any(REGISTRY[m].needs_model for m in methods)


def require_checkpoint(methods: Sequence[str], given: bool) -> None:
    if uses_model(methods) and not given:
        raise UserError(f"`method` {'|'.join(methods)} needs `checkpoint` (or use `method` lookup)")


def methods_for(name: str) -> tuple[str, ...]:
    """The methods a `--method` value names: one method, or a set (both, all)."""
    if name in METHOD_SETS:
        return METHOD_SETS[name]
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r}: use {'|'.join(METHOD_CHOICES)}")
    return (name,)


@dataclass
class Scorer:
    """Anomaly maps B x 1 x H x W in [0, 1] per method, from features computed once."""

    encoder: torch.nn.Module
    model: MetaUAS | None = None
    methods: tuple[str, ...] = METHODS
    # K prompts: average aligned features | one joint dictionary | mean | max of per-prompt maps
    shot_fusion: str = "features"
    lookup: LookupConfig = field(default_factory=LookupConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mix_weight: float = MIX_WEIGHT  # weight of the lookup map in the `mix` method
    # the trained model's counts (None: count `model`; a prepared model has folded layers)
    model_parameters: dict[str, int] | None = None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys((*ENCODER_PARTS, *METHODS), 0.0))
    images: int = 0

    def __post_init__(self) -> None:
        require_checkpoint(self.methods, self.model is not None)
        if self.shot_fusion not in SHOT_FUSIONS:
            raise UserError(f"unknown shot fusion {self.shot_fusion!r}: use {'|'.join(SHOT_FUSIONS)}")
        if not 0.0 <= self.mix_weight <= 1.0:
            raise UserError(f"`mix_weight` must be in [0, 1], got {self.mix_weight}")
        if self.model is not None and self.model_parameters is None:
            self.model_parameters = self.model.parameter_counts()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature list (both encoders' stages when paired, each timed)."""
        images, feats = images.to(self.device), []
        parts = self.encoder.parts() if isinstance(self.encoder, PairedEncoder) else {"encoder": self.encoder}
        for name, encoder in parts.items():
            start = time.perf_counter()
            feats += encoder(images)
            self._sync()
            self.seconds[name] += time.perf_counter() - start
        return feats

    def part(self, feats: Sequence[torch.Tensor], which: str) -> list[torch.Tensor]:
        """The `lookup` or `model` stages of a feature list from `features`."""
        return split_features(self.encoder, feats, which)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def model_map(self, prompt_feats: Sequence[Sequence[torch.Tensor]], query_feats, size) -> torch.Tensor:
        model = self.model
        if model is None:  # __post_init__ lets no model method through without a model
            raise RuntimeError("a model map without a model")
        shots = [self.part(p, "model") for p in prompt_feats]  # the model takes lists
        query = self.part(query_feats, "model")
        if len(shots) == 1 or self.shot_fusion in ("features", "joint"):
            pf = shots[0] if len(shots) == 1 else shots
            return torch.sigmoid(model.segment(pf, query, size=size, joint=self.shot_fusion == "joint"))
        maps = torch.stack([torch.sigmoid(model.segment(p, query, size=size)) for p in shots])
        return maps.mean(0) if self.shot_fusion == "mean" else maps.amax(0)

    @torch.no_grad()
    def maps(
        self, prompt_feats: Sequence[Sequence[torch.Tensor]], query_feats: Sequence[torch.Tensor], size: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """`prompt_feats`: one feature list per shot, each with batch 1 (shared) or B.
        Each method's map is computed once per batch, its inputs first; each method's
        own time (not its inputs') is added to `seconds`."""
        out = self.compute(prompt_feats, query_feats, size, timed=True)
        for name, m in out.items():
            check_finite(bool(torch.isfinite(m).all()), name)
        self.images += query_feats[0].shape[0]
        return out

    def compute(
        self, prompt_feats: Sequence[Sequence[torch.Tensor]], query_feats: Sequence[torch.Tensor], size, timed: bool
    ) -> dict[str, torch.Tensor]:
        """The maps of `methods` (each of their inputs once); `timed` adds each method's
        own time to `seconds` (off where the computation is traced into a graph)."""
        done: dict[str, torch.Tensor] = {}

        def compute(name: str) -> torch.Tensor:
            if name not in done:
                method = REGISTRY[name]
                inputs = {m: compute(m) for m in method.uses}
                start = time.perf_counter()
                done[name] = method.compute(self, prompt_feats, query_feats, size, inputs).float()
                if timed:
                    self._sync()
                    self.seconds[name] += time.perf_counter() - start
            return done[name]

        return {name: compute(name) for name in self.methods}

    def head(self) -> MethodHead:
        """This scorer's one method as a module from encoder features to its map, for
        `model.export` (the same computation as `maps`, K prompt views per query)."""
        return MethodHead(self)

    def efficiency(self, size: int) -> dict[str, dict]:
        """Per method: parameters, ms per query image (the encoders it uses included), device."""
        n = max(self.images, 1)
        paired = isinstance(self.encoder, PairedEncoder)
        lookup_encoder = self.encoder.lookup if isinstance(self.encoder, PairedEncoder) else self.encoder
        lookup_params = sum(p.numel() for p in lookup_encoder.parameters())
        info = {}
        for method in self.methods:  # the baseline's only parameters are its frozen encoder's
            closure = _closure(method)
            params = dict(self.model_parameters or {}) if uses_model((method,)) else {"total": 0, "learnable": 0}
            if "lookup" in closure and (paired or not uses_model((method,))):
                params["total"] = params.get("total", 0) + lookup_params
            parts = {"encoder"} if "model" in closure or not paired else set()
            parts |= {"lookup encoder"} if "lookup" in closure else set()
            ms = 1000 * sum(self.seconds[k] for k in (*parts, *closure)) / n
            info[method] = {"parameters": params, "ms_per_image": ms, "size": size, "device": describe(self.device)}
        return info


def scoring_encoder(methods: Sequence[str], lookup: LookupConfig, model: MetaUAS | None) -> torch.nn.Module:
    """The encoder a scorer runs for `methods`: the model's, the lookup's, or both paired
    (`mix` with a lookup on another encoder than `model`'s). Built here, offline weights,
    in eval mode; without a model, `SHARED_ENCODER` is the default encoder (lite0)."""
    from metauas.model.config import EncoderConfig
    from metauas.model.encoder import build_encoder

    needs_lookup = any("lookup" in _closure(m) for m in methods)
    name = lookup.encoder
    if model is not None and (not needs_lookup or name in (SHARED_ENCODER, model.cfg.encoder.name)):
        return model.encoder
    built = build_encoder(EncoderConfig(name=EncoderConfig().name if name == SHARED_ENCODER else name))
    built = built.to(memory_format=torch.channels_last)
    return PairedEncoder(built, model.encoder) if model is not None and uses_model(methods) else built


def build_scorer(
    checkpoint: str | Path | None,
    methods: tuple[str, ...],
    shot_fusion: str,
    lookup: LookupConfig,
    device: torch.device,
    mix_weight: float = MIX_WEIGHT,
    compile: bool = False,
) -> tuple[Scorer, dict]:
    """Load the checkpoint (made inference-only and faster, see `inference`) or the
    default offline encoder."""
    from metauas.inference.prepared import keep_freed_buffers, prepare_for_inference

    require_checkpoint(methods, checkpoint is not None)  # before loading anything
    meta: dict = {}
    model: MetaUAS | None = None
    counts: dict[str, int] | None = None
    if checkpoint is not None:
        from metauas.model.checkpoint import load_model
        from metauas.model.hub import resolve_checkpoint

        loaded, meta = load_model(resolve_checkpoint(checkpoint), map_location="cpu")
        counts = loaded.parameter_counts()  # before folding merges layers and freezes all
        loaded = prepare_for_inference(loaded.to(device), compile=compile)
        encoder = scoring_encoder(methods, lookup, loaded).to(device)
        model, counts = (loaded, counts) if uses_model(methods) else (None, None)
    else:
        keep_freed_buffers()  # the lookup baseline alone (prepare_for_inference does it otherwise)
        encoder = scoring_encoder(methods, lookup, None).to(device)
    scorer = Scorer(encoder, model, methods, shot_fusion, lookup, device, mix_weight, model_parameters=counts)
    return scorer, meta


class MethodHead(torch.nn.Module):
    """A scorer's method as an export head (`model.export.ModelHead`'s contract):
    (prompt stages, query stages, (H, W)) -> N x 1 x H x W, and the `method` settings the
    graph's metadata records, so a deployed graph says which map it computes."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        if len(scorer.methods) != 1:
            raise UserError("an exported graph computes one method: model, lookup or mix")
        self.scorer, self.name = scorer, scorer.methods[0]
        self.model = scorer.model  # a submodule: eval() and float() reach it
        self.method: dict = {"name": self.name}
        if self.name in ("lookup", "mix"):
            self.method["lookup"] = dataclasses.asdict(scorer.lookup)
        if self.name == "mix":
            self.method["mix_weight"] = scorer.mix_weight

    def forward(
        self, shots: list[list[torch.Tensor]], query: list[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        return self.scorer.compute(shots, query, size, timed=False)[self.name]


def _closure(name: str) -> set[str]:
    """A method and every method whose map it uses, recursively (what its time includes)."""
    return {name}.union(*(_closure(m) for m in REGISTRY[name].uses))


def map_to_numpy(m: torch.Tensor) -> np.ndarray:
    return m.detach().float().cpu().numpy().reshape(m.shape[-2], m.shape[-1])


class TorchBackend:
    """A `Scorer` running one method, as the Segmenter's backend (see `api.Segmenter`):
    features stay torch tensors on the scorer's device; maps come back as numpy."""

    runtime = "torch"

    def __init__(self, scorer: Scorer, meta: dict, size: int | None, source: str) -> None:
        if len(scorer.methods) != 1:
            raise UserError("a Segmenter runs one method: model, lookup or mix")
        self.scorer, self.meta, self.source = scorer, meta, source
        self.size = size or int(meta.get("size", 256))
        self.method = scorer.methods[0]
        self.device = describe(scorer.device)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None,
        method: str,
        size: int | None,
        device: str,
        shot_fusion: str,
        lookup: LookupConfig,
        mix_weight: float,
        compile: bool,
    ) -> TorchBackend:
        from metauas.devices import resolve_device

        scorer, meta = build_scorer(
            checkpoint, methods_for(method), shot_fusion, lookup, resolve_device(device), mix_weight, compile=compile
        )
        return cls(scorer, meta, size, str(checkpoint) if checkpoint is not None else "lookup baseline")

    def encode(self, batch: np.ndarray) -> list[torch.Tensor]:
        return self.scorer.features(torch.from_numpy(batch))

    @staticmethod
    def concat(parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        return [torch.cat(stage) for stage in zip(*parts)]

    @staticmethod
    def vectors(feats: list[torch.Tensor]) -> np.ndarray:
        """N x C unit vectors of the last stage averaged over positions (`prompts.pooled`)."""
        return torch.nn.functional.normalize(feats[-1].float().mean(dim=(2, 3)), dim=1).cpu().numpy()

    def maps(self, prompt_feats: list[list[torch.Tensor]], query_feats: list[torch.Tensor]) -> np.ndarray:
        m = self.scorer.maps(prompt_feats, query_feats, (self.size, self.size))[self.method]
        return m[:, 0].detach().float().cpu().numpy()
