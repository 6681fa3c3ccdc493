"""Self-describing, atomic checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint holds the full model state (the frozen encoder's weights included, so
prediction needs no network and no weights package), the model config as a plain dict,
the training size and step, library versions, and for resuming the optimiser, scheduler,
AMP scaler and RNG states. It is written to a temporary name and renamed, so a kill
mid-save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metauas.errors import UserError
from metauas.model.config import MAX_SIDE, MIN_SIDE, ModelConfig
from metauas.model.files import load_weights_file
from metauas.model.network import MetaUAS
from metauas.outputs import write_atomic

log = logging.getLogger("metauas.model")

FORMAT = "metauas-checkpoint/1"


def versions() -> dict[str, str]:
    import timm

    from metauas.version import __version__

    return {"metauas": str(__version__), "torch": str(torch.__version__), "timm": str(timm.__version__)}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in types `weights_only` loading accepts."""
    np_state = typing.cast(tuple, np.random.get_state())  # legacy=True, the default: the tuple form
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save into memory, then `outputs.write_atomic` (fsync, rename): a full disk
    is a plain OSError (ENOSPC) with no temporary file left, not a torch internal error."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getbuffer(), fsync=True)


def save_checkpoint(
    path: str | Path,
    model: MetaUAS,
    *,
    size: int,
    step: int,
    training: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the model (and, for resuming, `training` states) atomically to `path`.

    `training` maps names (optimizer, scheduler, scaler, ...) to state dicts; the RNG
    states of this process are added to it.
    """
    path = Path(path)
    bad = non_finite(model.state_dict())
    if bad:  # a checkpoint no loader would accept: keep the last good one instead
        raise UserError(
            f"not saving {path}: {len(bad)} weight tensors hold NaN or infinity (first: {bad[0]}); "
            f"the file there, if any, is the last good one"
        )
    meta = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "encoder": model.cfg.encoder.name,
        "size": int(size),
        "step": int(step),
        "versions": versions(),
        "parameters": model.parameter_counts(),
        **(extra or {}),
    }
    payload = {"meta": meta, "model": model.state_dict()}
    if training is not None:
        payload["training"] = {**training, "rng": rng_state()}
    atomic_save(payload, path)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, every field checked (`check_payload`); a missing, truncated,
    foreign or malformed file is a UserError. `weights_only=True`: a pickle in the file
    never runs."""
    payload = load_weights_file(path, "checkpoint")
    check_payload(payload, path)
    if str(map_location) != "cpu":
        payload["model"] = {k: v.to(map_location) for k, v in payload["model"].items()}
    return payload


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_payload(payload: Any, path: str | Path) -> ModelConfig:
    """Every field a loader uses, checked before use; returns the model config.

    A foreign file, a `meta` that is not an object, a config with an unknown key or an
    impossible value, a size or step that is not a whole number, weights that are not a
    name -> tensor table: each is one UserError naming the file and the field."""
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a metauas checkpoint ({FORMAT})")
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{path}: its meta.config (the model config) is missing or not an object")
    cfg = ModelConfig.from_dict(meta["config"], f"{path}: model config")
    if not _count(meta.get("size"), MIN_SIDE) or meta["size"] > MAX_SIDE or not _count(meta.get("step"), 0):
        raise UserError(
            f"{path}: meta.size and meta.step must be whole numbers (size {MIN_SIDE} to {MAX_SIDE}, step >= 0), "
            f"got {meta.get('size')!r} and {meta.get('step')!r}"
        )
    weights = payload.get("model")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise UserError(f"{path}: its model weights are missing or not a table of tensors")
    stretched = [k for k, v in weights.items() if v.numel() * v.element_size() > v.untyped_storage().nbytes()]
    if stretched:  # a view claiming more elements than its data (zero strides): any check would allocate them
        raise UserError(f"{path}: its tensor {stretched[0]} claims more elements than its data holds; not a checkpoint")
    bad = non_finite(weights)
    if bad:
        raise UserError(
            f"{path}: {len(bad)} of its {len(weights)} weight tensors hold NaN or infinity (first: {bad[0]}); "
            "the training that saved it diverged: use an earlier checkpoint"
        )
    return cfg


def non_finite(weights: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def build_model(cfg: ModelConfig, path: str | Path) -> MetaUAS:
    """The network a checkpoint's config describes, without looking for encoder weights
    (they are in the checkpoint); a config timm cannot build is a UserError."""
    try:
        return MetaUAS(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none")))
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise UserError(f"{path}: its model config cannot be built ({type(err).__name__}: {str(err)[:150]})") from None


def load_weights(model: MetaUAS, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load `weights` into `model` after checking every name and shape, so a checkpoint
    whose weights belong to another model (another fusion, alignment, encoder or decoder,
    or an edited file) is named as such instead of a size-mismatch traceback."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [
        f"{k}: {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        cfg = model.cfg
        first = (wrong or [f"missing {k}" for k in missing] or [f"unexpected {k}" for k in unexpected])[0]
        raise UserError(
            f"{path}: its weights do not fit the model its config describes (encoder {cfg.encoder.name}, "
            f"fusion {cfg.fusion}, alignment {cfg.alignment}): {len(wrong)} of another shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected (first: {first}); the file was made "
            "for another model or edited"
        )
    model.load_state_dict(weights)


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is one of our checkpoints (and not, e.g., the paper authors' file)."""
    try:
        read_checkpoint(path)
    except UserError:
        return False
    return True


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MetaUAS, dict]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode."""
    payload = read_checkpoint(path, map_location)
    cfg = check_payload(payload, path)
    model = build_model(cfg, path)
    load_weights(model, payload["model"], path)
    model.cfg = cfg
    meta = payload["meta"]
    log.debug("loaded %s: step %s, %s px, encoder %s", path, meta.get("step"), meta.get("size"), cfg.encoder.name)
    return model.to(map_location).eval(), meta


def training_state(payload: dict, path: str | Path) -> dict[str, Any]:
    """The states `--resume` restores, checked: a model-only checkpoint (imported with
    `import-official`, or not saved by `metauas train`) cannot be resumed."""
    training = payload.get("training")
    if training is None:
        raise UserError(
            f"{path} holds a model without training state (an imported or exported checkpoint), so "
            "`resume` cannot continue it; start a new run with another `out`"
        )
    needed = {"optimizer": dict, "scaler": dict, "state": dict, "rng": dict}
    if not isinstance(training, dict) or any(not isinstance(training.get(k), t) for k, t in needed.items()):
        raise UserError(f"{path}: its training state is malformed (needs optimizer, scaler, state and rng tables)")
    return training


def export_safetensors(model: MetaUAS, path: str | Path, meta: dict[str, Any]) -> Path:
    """The learnable weights (alignment, decoder, head) as safetensors, config in its header."""
    import json

    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.learnable_state_dict().items()}
    data = save(
        tensors, metadata={"config": json.dumps(meta["config"]), "size": str(meta["size"]), "step": str(meta["step"])}
    )
    return write_atomic(path, data)
