"""Training MetaUAS on streamed change pairs: one process, or DDP under torchrun.

`train(cfg)` runs the whole thing and returns the final checkpoint. Rank 0 validates,
logs (progress bar, metrics.jsonl, TensorBoard) and saves; every rank trains on its own
part of the stream. The learning-rate schedule (linear warmup, then cosine) follows
training progress, which is steps done over `steps` or, with a wall-clock budget, time
used over `max_minutes`, whichever is further, so a 10-minute run still anneals.

This module is the loop; the schedule and the checks before a run are `schedule.py`, the
loss `losses.py`, validation `validation.py`, the log `runlog.py`, and the run folder,
checkpoints and resumed state `state.py`.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from timm.utils import ModelEmaV3

from metauas.data.format import expand_urls
from metauas.errors import UserError
from metauas.model.checkpoint import export_safetensors, save_checkpoint
from metauas.model.network import MetaUAS
from metauas.outputs import out_of_space
from metauas.trainer import distributed
from metauas.trainer.config import TrainConfig
from metauas.trainer.device_augment import add_sensor_noise, with_second_shot
from metauas.trainer.ema import fold_in
from metauas.trainer.losses import training_loss
from metauas.trainer.runlog import RunLog, Window
from metauas.trainer.schedule import check_length, first_pair, lr_factor, total_steps, warn_short_warmup
from metauas.trainer.state import (
    BEST,
    CHECKPOINT,
    State,
    build_training,
    prepare_run_dir,
    record_config,
    run_lock,
    save_state,
    wrap_model,
)
from metauas.trainer.stream import StreamConfig, to_device, train_loader
from metauas.trainer.validation import Validation, build_validation

log = logging.getLogger("metauas.train")


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run described by `cfg`; returns `<out>/last.pt`."""
    d = distributed.setup(cfg.device)
    try:
        with run_lock(cfg.out, d.main):
            return _train(cfg, d)
    finally:
        distributed.teardown(d)


@dataclass
class Run:
    """Everything one training process holds while it runs (built by `_train`)."""

    cfg: TrainConfig
    d: distributed.Dist
    model: MetaUAS
    ema: ModelEmaV3 | None  # the weights' average (`--ema`): what is validated and saved
    net: torch.nn.Module  # the model as trained: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    state: State
    total: int | None
    run_dir: Path
    validator: Validation | None
    log: RunLog
    start_elapsed: float = 0.0
    t0: float = field(default_factory=time.monotonic)
    window: Window = field(default_factory=Window)
    saved_step: int | None = None  # the step last.pt holds (None: nothing saved yet)

    def progress(self) -> float:
        """Fraction done, by steps or wall clock; rank 0's decides under a time budget
        (clocks differ, and ranks must stop at the same step)."""
        value = _progress(self.cfg, self.state, self.total, self.start_elapsed, self.t0)
        return distributed.broadcast_float(self.d, value) if self.cfg.max_minutes else value

    @property
    def weights(self) -> MetaUAS:
        """The model a user gets: the average with `--ema`, else the trained weights."""
        return self.model if self.ema is None else self.ema.module

    def stamp(self) -> dict:
        return {"step": self.state.step, "elapsed_s": round(self.state.elapsed_s, 2)}

    def validate(self) -> None:
        """Validation metrics to the log; the model to best.pt when its P-AP (real folders'
        if any, else the pairs') is the best yet."""
        if self.validator is None:
            return
        metrics = self.validator(self.weights, self.d.device, self.cfg.batch_size)
        self.log.row({**self.stamp(), **metrics})
        ap, best = metrics[self.validator.key], self.state.best_val_p_ap
        if math.isfinite(ap) and (best is None or ap > best):
            self.state.best_val_p_ap, self.state.best_step = ap, self.state.step
            size, step = self.cfg.size, self.state.step
            save_checkpoint(self.run_dir / BEST, self.weights, size=size, step=step, extra={"validation": metrics})

    def save(self) -> Path:
        path = save_state(self.run_dir, self.model, self.ema, self.cfg, self.state, self.optimizer, self.scaler)
        self.saved_step = self.state.step
        log.debug("saved %s at step %d", path, self.state.step)
        return path

    def safe(self) -> str:
        """What the run folder holds to go on from."""
        if self.saved_step is None:
            return "no checkpoint was saved yet"
        return f"{CHECKPOINT} holds step {self.saved_step}"

    def out_of_space(self) -> UserError:
        """A full disk: what is safe, and how to go on."""
        return UserError(
            f"no space left on device in {self.run_dir} at step {self.state.step}: {self.safe()} (the partial "
            "file was removed); free some space and rerun with `resume` to continue from it"
        )

    def diverged(self, parts: dict[str, float]) -> UserError:
        """A loss that is not a number: nothing it touched is saved or logged."""
        bad = ", ".join(f"{k} {v}" for k, v in parts.items() if not math.isfinite(v))
        then = "lower `lr` and start again" if self.saved_step is None else "the last good one; lower `lr`"
        return UserError(
            f"training diverged at step {self.state.step}: the loss is not a finite number ({bad}), so "
            f"nothing of it was saved or logged; {self.safe()}, {then}"
        )


def _train(cfg: TrainConfig, d: distributed.Dist) -> Path:
    cfg = cfg.per_process(d.world)  # a global batch split over the processes (config.json records both)
    urls = expand_urls(list(cfg.train) if isinstance(cfg.train, tuple) else cfg.train)
    total = total_steps(cfg, urls, d.world)
    check_length(cfg, total)
    run_dir, payload = prepare_run_dir(cfg, d)
    first_pair(urls)
    torch.manual_seed(cfg.seed + d.rank)
    model, ema, optimizer, scaler, amp, state = build_training(cfg, payload, d)
    if payload is not None and _progress(cfg, state, total, state.elapsed_s, time.monotonic()) >= 1.0:
        log.info("%s is already complete (step %d): nothing to resume", run_dir / CHECKPOINT, state.step)
        return run_dir / CHECKPOINT  # a rerun must not re-save, re-validate, re-log or re-record
    record_config(run_dir, replace(cfg, model=model.cfg), d)  # a resume keeps the checkpoint's model
    validator = build_validation(cfg) if d.main else None
    saved_step = None if payload is None else state.step
    run = Run(
        cfg,
        d,
        model,
        ema,
        wrap_model(model, cfg, d),
        optimizer,
        scaler,
        amp,
        state,
        total,
        run_dir,
        validator,
        RunLog(run_dir, d.main, saved_step),
        start_elapsed=state.elapsed_s,
        saved_step=saved_step,
    )
    stream = StreamConfig(
        tuple(urls),
        size=cfg.size,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        shuffle_buffer=cfg.shuffle_buffer,
        resampled=cfg.resampled or d.active,
        seed=cfg.seed,
        start_step=state.step,
        augment=cfg.augment,
        augment_on=augment_place(cfg, d.device),
    )
    warn_short_warmup(cfg, total, d.main)
    try:
        if payload is None:  # the untrained baseline, for comparison
            run.validate()
        _loop(run, iter(train_loader(stream)))
    except OSError as err:
        if out_of_space(err):
            raise run.out_of_space() from None
        raise
    finally:
        run.log.close()
    return run_dir / CHECKPOINT


def augment_place(cfg: TrainConfig, device: torch.device) -> str:
    """Where the augmentation runs: on a GPU the batched device path (its loader workers
    only decode), on the CPU the workers (the main process is busy with the step)."""
    if cfg.augment_on != "auto":
        return cfg.augment_on
    return "device" if device.type == "cuda" else "workers"


def _progress(cfg: TrainConfig, state: State, total: int | None, start_elapsed: float, t0: float) -> float:
    """Fraction of the run done: by steps, by wall clock, whichever is further."""
    by_steps = state.step / total if total else 0.0
    by_time = (start_elapsed + time.monotonic() - t0) / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
    return max(by_steps, by_time)


def step(run: Run, batch: dict, progress: float) -> dict[str, float]:
    """One optimiser step on one batch at the scheduled learning rate; the loss parts."""
    cfg, device = run.cfg, run.d.device
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(cfg, run.state.step, progress)
    prompt, query, masks = to_device(batch, device)
    noise_key = [cfg.seed, run.d.rank, run.state.step]  # where the run is: a resume adds the same noise
    prompt, query = add_sensor_noise([prompt, query], cfg.augment.sensor_noise, noise_key)
    prompt, query, masks = with_second_shot(prompt, query, masks, cfg.consistency > 0, [*noise_key, 1])
    if device.type == "cuda":
        prompt, query = (x.contiguous(memory_format=torch.channels_last) for x in (prompt, query))
    with torch.autocast(device.type, dtype=run.amp) if run.amp is not None else nullcontext():
        if cfg.lookup_weight > 0:
            logits, pairs = run.net(prompt, query, return_aligned=True)
        else:
            logits, pairs = run.net(prompt, query), None
    loss, parts = training_loss(logits, pairs, masks, cfg)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.learnable_parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.state.step += 1
    fold_in(run.ema, run.model, run.state.step)
    run.state.elapsed_s = run.start_elapsed + time.monotonic() - run.t0
    values = torch.stack([v.detach().float() for v in parts.values()]).tolist()  # one sync
    return dict(zip(parts, values))


def _log_window(run: Run) -> dict:
    """The metrics row of the steps since the last one (mean loss parts, lr, pairs/s)."""
    w = run.window
    pairs_per_s = w.steps * run.cfg.batch_size * run.d.world / (time.monotonic() - w.since)
    row = {
        **run.stamp(),
        **{k: v / w.steps for k, v in w.sums.items()},
        "lr": run.optimizer.param_groups[0]["lr"],
        "pairs_per_s": pairs_per_s,
    }
    run.log.row(row)
    run.window = Window()
    return row


def _loop(run: Run, batches) -> None:
    """Step until the run's progress reaches 1; log, validate and save on their cadences."""
    from tqdm import tqdm

    cfg, d = run.cfg, run.d
    run.model.train()
    bar = tqdm(
        total=run.total, initial=run.state.step, disable=not (d.main and cfg.progress), unit="step", dynamic_ncols=True
    )
    while (progress := run.progress()) < 1.0:
        batch = next(batches, None)
        if batch is None:
            raise UserError(
                f"the training stream ended at step {run.state.step}: every remaining sample was "
                "skipped as corrupt (see the warnings above)"
            )
        parts = step(run, batch, progress)
        if not all(math.isfinite(v) for v in parts.values()):
            raise run.diverged(parts)
        run.window.add(parts)
        bar.update(1)
        if run.state.step % cfg.log_every == 0 or run.state.step == run.total:
            row = _log_window(run)
            bar.set_postfix(loss=f"{row['loss']:.4f}", pairs_s=f"{row['pairs_per_s']:.1f}")
        if run.state.step % cfg.val_every == 0:
            run.validate()
        if d.main and run.state.step % cfg.save_every == 0:
            run.save()
    bar.close()
    if d.main:
        if run.state.step % cfg.val_every != 0:
            run.validate()
        run.save()
        export_safetensors(
            run.weights,
            run.run_dir / "model.safetensors",
            {"config": run.model.cfg.to_dict(), "size": cfg.size, "step": run.state.step},
        )
    distributed.barrier(d)
