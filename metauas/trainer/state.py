"""A run's folder, checkpoints and state: what a run starts from (fresh, or the
checkpoint it resumes), what it saves, and what resuming restores."""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from metauas.configs import from_dict
from metauas.errors import UserError
from metauas.model.checkpoint import (
    build_model,
    check_payload,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from metauas.model.network import MetaUAS
from metauas.outputs import prepare_dir, remove_stale_temps, write_atomic
from metauas.trainer import distributed
from metauas.trainer.config import TrainConfig
from metauas.trainer.ema import build_ema, raw_state

log = logging.getLogger("metauas.train")
CHECKPOINT = "last.pt"
LOCK = ".lock"  # held by the run writing the folder (`run_lock`)
BEST = "best.pt"  # the weights with the best validation P-AP (runs with --val)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


@dataclass
class State:
    """What resuming restores besides the weights: step and time used so far, and the
    best validation P-AP (whose weights are in best.pt; real folders' when --val has any)."""

    step: int = 0
    elapsed_s: float = 0.0
    best_val_p_ap: float | None = None
    best_step: int | None = None


@contextmanager
def run_lock(out: str | Path, main: bool) -> Iterator[None]:
    """One training run per folder: rank 0 holds a POSIX lock (`fcntl.lockf`, as
    generate's shard locks) on `<out>/.lock` for the whole run, taken before anything is
    read or written there. A second run into the same folder is refused in one line, so
    two runs never interleave config.json, metrics.jsonl and last.pt. The lock works on
    NFS and dies with its process: a killed run leaves none behind."""
    if not main:  # the ranks of one run share its folder; rank 0 speaks for them
        yield
        return
    import fcntl

    run_dir = prepare_dir(out)
    with open(run_dir / LOCK, "a+b") as lock:
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(
                f"`out` {run_dir}: another training run is writing there right now; wait for it to end "
                "(`resume` then continues it) or choose another `out`"
            ) from None
        yield


def prepare_run_dir(cfg: TrainConfig, d: distributed.Dist) -> tuple[Path, dict | None]:
    """The run folder, checked, and the checkpoint payload to resume from (None: a fresh
    run). `--resume` with no checkpoint is an error, not a fresh start over the folder's log."""
    run_dir = prepare_dir(cfg.out)
    ckpt = run_dir / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise UserError(f"{run_dir} already holds a run ({CHECKPOINT}); pass `resume` or a new `out`")
    if cfg.resume and not ckpt.exists():
        raise UserError(
            f"`resume`: {run_dir} holds no {CHECKPOINT} to continue (a run stopped before its first save "
            "starts again without `resume`)"
        )
    payload = read_checkpoint(ckpt) if cfg.resume else None
    if payload is not None:
        training_state(payload, ckpt)  # a model-only checkpoint cannot be resumed: say so now
    if d.main:
        remove_stale_temps(run_dir)  # a checkpoint or log cut short by a kill
    return run_dir, payload


_SAYS_NOTHING = ("resume", "progress", "workers")  # options that do not change what is trained


def changed_settings(run_dir: Path, cfg: TrainConfig) -> dict[str, tuple]:
    """{setting: (recorded, given)} where `cfg` differs from the run's config.json in what
    is trained; empty without a readable record (the trainer's checks say what is wrong)."""
    try:
        old = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    new = cfg.to_dict()
    return {k: (old[k], v) for k, v in new.items() if k not in _SAYS_NOTHING and k in old and old[k] != v}


def record_config(run_dir: Path, cfg: TrainConfig, d: distributed.Dist) -> None:
    """Write the run's config.json, once the run is known to train (fresh, or resumed and
    not yet complete): a finished run's record keeps describing its weights, whatever
    options a rerun was given. A resume with other settings says which ones changed."""
    if not d.main:
        return
    changed = changed_settings(run_dir, cfg) if cfg.resume else {}
    if changed:
        said = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
        log.warning("resuming with other settings than the run's config.json (%s)", said)
    write_atomic(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2).encode())


def build_training(cfg: TrainConfig, payload: dict | None, d: distributed.Dist):
    """Model (fresh, or the checkpoint's config and weights), its average (`--ema`, else
    None), optimiser and AMP scaler."""
    ckpt = Path(cfg.out) / CHECKPOINT
    if payload is None:
        model = MetaUAS(cfg.model)
    else:
        saved = check_payload(payload, ckpt)
        if saved != cfg.model and d.main:
            log.warning("resuming with the checkpoint's model config, not the options given")
        model = build_model(saved, ckpt)
        load_weights(model, payload["model"], ckpt)
        model.cfg = saved
    model.to(d.device)
    if d.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    ema = build_ema(model, cfg.ema, payload, ckpt)
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = _amp_dtype(cfg, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp == torch.float16)
    state = State() if payload is None else _restore(payload, ckpt, optimizer, scaler)
    return model, ema, optimizer, scaler, amp, state


def _restore(payload: dict, ckpt: Path, optimizer, scaler) -> State:
    """Optimiser, scaler, step/time and RNG states of a resumed run; states that do not
    fit this run (edited, or saved by another version) are one UserError."""
    training = training_state(payload, ckpt)
    try:
        optimizer.load_state_dict(training["optimizer"])
        scaler.load_state_dict(training["scaler"])
        state = from_dict(State, training["state"], f"{ckpt}: training.state")
        set_rng_state(training["rng"])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as err:
        raise UserError(
            f"{ckpt}: its training state does not fit this run ({type(err).__name__}: "
            f"{str(err)[:150]}); start a new run with another `out`"
        ) from None
    if not isinstance(state.step, int) or state.step < 0 or not isinstance(state.elapsed_s, (int, float)):
        raise UserError(f"{ckpt}: training.state has an impossible step or time: {training['state']}")
    return state


def wrap_model(model: MetaUAS, cfg: TrainConfig, d: distributed.Dist) -> torch.nn.Module:
    """The model as trained: DDP-wrapped under torchrun, compiled with --compile."""
    net: torch.nn.Module = model
    if d.active:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if cfg.compile:
        net = typing.cast(torch.nn.Module, torch.compile(net))  # the module, wrapped (an OptimizedModule)
    return net


def save_state(run_dir: Path, model: MetaUAS, ema, cfg: TrainConfig, state: State, optimizer, scaler) -> Path:
    """last.pt: the weights (the average with `--ema`) and everything resuming restores."""
    training = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": dataclasses.asdict(state),
        **raw_state(ema, model),
    }
    weights = model if ema is None else ema.module
    return save_checkpoint(run_dir / CHECKPOINT, weights, size=cfg.size, step=state.step, training=training)
