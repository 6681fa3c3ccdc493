"""Self-describing, atomic checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint holds the full model state (the frozen encoder's weights included, so
prediction needs no network and no weights package), the model config as a plain dict,
the training size and step, library versions, and for resuming the optimiser, scheduler,
AMP scaler and RNG states. It is written to a temporary name and renamed, so a kill
mid-save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metauas.errors import UserError
from metauas.model.config import ModelConfig
from metauas.model.network import MetaUAS

FORMAT = "metauas-checkpoint/1"


def versions() -> dict[str, str]:
    import timm

    from metauas.version import __version__

    return {"metauas": str(__version__), "torch": str(torch.__version__), "timm": str(timm.__version__)}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in types `weights_only` loading accepts."""
    np_state = np.random.get_state()
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
    """torch.save to a temporary sibling, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, model: MetaUAS, *, size: int, step: int,
                    training: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the model (and, for resuming, `training` states) atomically to `path`.

    `training` maps names (optimizer, scheduler, scaler, ...) to state dicts; the RNG
    states of this process are added to it.
    """
    path = Path(path)
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
    """The raw checkpoint dict; a missing, truncated or foreign file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any file can be passed, and torch raises many kinds
        # torch's own message spans lines and suggests weights_only=False: not for a user
        raise UserError(f"{path} is corrupt or not a checkpoint (torch.load: {type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("meta", {}).get("format") != FORMAT:
        raise UserError(f"{path} is not a metauas checkpoint ({FORMAT})")
    return payload


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
    meta = payload["meta"]
    cfg = ModelConfig.from_dict(meta["config"])
    # the encoder's weights are in the checkpoint: never look for (or download) them
    model = MetaUAS(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none")))
    model.load_state_dict(payload["model"])
    model.cfg = cfg
    return model.to(map_location).eval(), meta


def export_safetensors(model: MetaUAS, path: str | Path, meta: dict[str, Any]) -> Path:
    """The learnable weights (alignment, decoder, head) as safetensors, config in its header."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.learnable_state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(meta["config"]),
                                            "size": str(meta["size"]), "step": str(meta["step"])})
    os.replace(tmp, path)
    return path
