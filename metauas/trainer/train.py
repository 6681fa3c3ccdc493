"""Training MetaUAS on streamed change pairs: one process, or DDP under torchrun.

`train(cfg)` runs the whole thing and returns the final checkpoint. Rank 0 validates,
logs (progress bar, metrics.jsonl, TensorBoard) and saves; every rank trains on its own
part of the stream. The learning-rate schedule (linear warmup, then cosine) follows
training progress, which is steps done over `steps` or, with a wall-clock budget, time
used over `max_minutes`, whichever is further, so a 10-minute run still anneals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from metauas.data.format import ReadStats, count_samples, expand_urls, iter_pairs
from metauas.configs import from_dict
from metauas.errors import UserError
from metauas.evaluation.metrics import pixel_auroc_ap
from metauas.evaluation.validate import RealValidator
from metauas.model.checkpoint import (
    build_model,
    check_payload,
    export_safetensors,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from metauas.model.network import MetaUAS, cosine_distance
from metauas.outputs import out_of_space, prepare_dir, remove_stale_temps, write_atomic
from metauas.trainer import distributed
from metauas.trainer.config import TrainConfig
from metauas.trainer.stream import StreamConfig, resized_pairs, to_device, to_float, train_loader

log = logging.getLogger("metauas.train")
CHECKPOINT = "last.pt"
BEST = "best.pt"  # the weights with the best validation P-AP (runs with --val)


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine from 1 to `min_lr_ratio` over progress."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Pixel BCE (the paper's loss), optionally plus soft Dice over each image."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), masks)
    if dice_weight > 0:
        probs = torch.sigmoid(logits.float()).flatten(1)
        target = masks.flatten(1)
        dice = 1 - (2 * (probs * target).sum(1) + 1) / (probs.sum(1) + target.sum(1) + 1)
        loss = loss + dice_weight * dice.mean()
    return loss


CQC_WEIGHT = 0.1  # DictAS's weight of the contrastive query constraint beside L_query


def stage_masks(masks: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchanged and changed positions (B x h x w bools) of a feature stage.

    A stage position covers a cell of input pixels; its changed fraction comes from area
    pooling. Unchanged = no changed pixel in the cell (L_query must not pull a changed
    pixel's lookup towards the query); changed = at least half the cell changed. Mixed
    cells at change borders are in neither set: their features mix both.
    """
    fraction = F.adaptive_avg_pool2d(masks.float(), size)[:, 0]
    return fraction == 0, fraction >= 0.5


def lookup_losses(pairs: list[tuple[torch.Tensor, torch.Tensor]], masks: torch.Tensor,
                  margin: float) -> dict[str, torch.Tensor]:
    """DictAS's visual lookup constraints, supervised by the change masks; stage means.

    In the frozen feature space, with distance d = 1 - cos(query feature, aligned prompt
    feature) per position: L_query = mean d over unchanged positions (an unchanged
    position's lookup should retrieve its own content); L_CQC = mean over pairs of
    relu(mean unchanged d - mean changed d + margin), only over pairs with both kinds of
    position at the stage's resolution (a change should not be found in the prompt, so
    its distance must exceed the unchanged distance by the margin).
    """
    queries, cqcs = [], []
    for query, aligned in pairs:
        dist = cosine_distance(query.float(), aligned.float())[:, 0]  # B x h x w
        unchanged, changed = stage_masks(masks, dist.shape[-2:])
        queries.append((dist * unchanged).sum() / unchanged.sum().clamp(min=1))
        both = unchanged.flatten(1).any(1) & changed.flatten(1).any(1)
        gap = _masked_mean(dist, unchanged) - _masked_mean(dist, changed) + margin
        cqcs.append((gap.relu() * both).sum() / both.sum().clamp(min=1))
    return {"loss_query": torch.stack(queries).mean(), "loss_cqc": torch.stack(cqcs).mean()}


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of x (B x h x w) over `keep` positions (0 where none)."""
    return (x * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp(min=1)


def training_loss(logits: torch.Tensor, pairs: list | None, masks: torch.Tensor,
                  cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to minimise and its parts for the log (`loss` is the total; the BCE/Dice
    part `loss_seg` and the lookup parts are logged only when the lookup losses are on)."""
    loss = segmentation_loss(logits, masks, cfg.dice_weight)
    parts = {"loss": loss}
    if pairs is not None:
        lookup = lookup_losses(pairs, masks, cfg.cqc_margin)
        parts["loss_seg"] = loss
        parts["loss_lookup"] = lookup["loss_query"] + CQC_WEIGHT * lookup["loss_cqc"]
        parts.update(lookup)
        loss = loss + cfg.lookup_weight * parts["loss_lookup"]
        parts["loss"] = loss
    return loss, parts


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def _total_steps(cfg: TrainConfig, urls: list[str], world: int) -> int | None:
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * count_samples(urls) / (cfg.batch_size * world)))
    return None


class Validator:
    """Pixel AUROC / AP and BCE on held-out pairs, decoded once and kept as uint8."""

    def __init__(self, urls: str | tuple[str, ...], size: int, max_pairs: int) -> None:
        prompts, queries, masks = [], [], []
        for pair in resized_pairs(list(urls) if isinstance(urls, tuple) else urls, size):
            prompts.append((pair["prompt"] * 255).round().to(torch.uint8))
            queries.append((pair["query"] * 255).round().to(torch.uint8))
            masks.append(pair["mask"].to(torch.uint8))
            if len(masks) >= max_pairs:
                break
        if not masks:
            raise UserError(f"no readable validation pairs in {urls}")
        self.prompts, self.queries, self.masks = map(torch.stack, (prompts, queries, masks))

    def __len__(self) -> int:
        return len(self.masks)

    @torch.inference_mode()
    def __call__(self, model: MetaUAS, device: torch.device, batch_size: int) -> dict[str, float]:
        was_training = model.training
        model.eval()
        probs, losses = [], []
        for i in range(0, len(self), batch_size):
            logits = model(to_float(self.prompts[i:i + batch_size], device),
                           to_float(self.queries[i:i + batch_size], device)).float()
            target = self.masks[i:i + batch_size].to(device).float()
            losses.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum").item())
            probs.append(torch.sigmoid(logits).cpu())
        model.train(was_training)
        auroc, ap = pixel_auroc_ap(torch.cat(probs), self.masks)
        return {"val_p_auroc": auroc, "val_p_ap": ap, "val_loss": sum(losses) / self.masks.numel(),
                "val_pairs": len(self)}


@dataclass
class Validation:
    """What --val names: held-out shard pairs (did it learn the task?) and/or MVTec-layout
    folders of real defects (does it transfer?). best.pt follows the real folders' P-AP
    when there are any, since transfer is what the model is for; else the pairs'."""

    pairs: Validator | None
    real: RealValidator | None

    @property
    def key(self) -> str:
        return "real_p_ap" if self.real is not None else "val_p_ap"

    def __call__(self, model: MetaUAS, device: torch.device, batch_size: int) -> dict[str, float]:
        row = self.pairs(model, device, batch_size) if self.pairs is not None else {}
        return row | (self.real(model, device) if self.real is not None else {})


def _validation(cfg: TrainConfig) -> Validation | None:
    shards, folders = cfg.val_sources()
    if not shards and not folders:
        return None
    pairs = Validator(shards[0] if len(shards) == 1 else tuple(shards), cfg.size, cfg.val_pairs) if shards else None
    return Validation(pairs, RealValidator(folders, cfg.val_size, cfg.val_seeds) if folders else None)


class RunLog:
    """metrics.jsonl in the run dir, always, and TensorBoard event files beside it when
    tensorboard is installed (the `tensorboard` extra). Rank 0 only; other ranks no-op."""

    def __init__(self, run_dir: Path, enabled: bool, saved_step: int | None = None) -> None:
        """`saved_step`: the step of the checkpoint this run resumes (None: a fresh start).
        Rows logged after it by a run that was killed before its next save are dropped,
        so the resumed run's rows follow without duplicates."""
        self.enabled = enabled
        self.writer = None
        if enabled:
            keep_rows(run_dir / "metrics.jsonl", saved_step)
            self.file = open(run_dir / "metrics.jsonl", "a")
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # torch's module needs the tensorboard package
                log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
            else:  # purge_step hides the killed run's events past the checkpoint
                self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                            purge_step=0 if saved_step is None else saved_step + 1)

    def row(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace("val_", "val/").replace("real_", "real/", 1), value, row["step"])

    def close(self) -> None:
        if self.enabled:
            try:
                self.file.close()
            except OSError:  # a full disk: the error that stopped the run is the one to report
                pass
            if self.writer is not None:
                self.writer.close()


def keep_rows(path: Path, saved_step: int | None) -> None:
    """Keep the metrics.jsonl rows up to `saved_step` (none when None), dropping the rows
    of a killed run past its last checkpoint (and a line the kill cut short)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if saved_step is not None and isinstance(row, dict) and isinstance(row.get("step"), int) \
                and row["step"] <= saved_step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept).encode())


@dataclass
class State:
    """What resuming restores besides the weights: step and time used so far, and the
    best validation P-AP (whose weights are in best.pt; real folders' when --val has any)."""

    step: int = 0
    elapsed_s: float = 0.0
    best_val_p_ap: float | None = None
    best_step: int | None = None


def _prepare_run_dir(cfg: TrainConfig, d: distributed.Dist) -> tuple[Path, dict | None]:
    run_dir = prepare_dir(cfg.out)
    ckpt = run_dir / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise UserError(f"{run_dir} already holds a run ({CHECKPOINT}); pass --resume or a new --out")
    payload = read_checkpoint(ckpt) if cfg.resume and ckpt.exists() else None
    if payload is not None:
        training_state(payload, ckpt)  # a model-only checkpoint cannot be resumed: say so now
    if d.main:
        remove_stale_temps(run_dir)  # a checkpoint or log cut short by a kill
        write_atomic(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2).encode())
    return run_dir, payload


def _build(cfg: TrainConfig, payload: dict | None, d: distributed.Dist):
    """Model (fresh, or the checkpoint's config and weights), optimiser and AMP scaler."""
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
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = _amp_dtype(cfg, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp == torch.float16)
    state = State() if payload is None else _restore(payload, ckpt, optimizer, scaler)
    return model, optimizer, scaler, amp, state


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
        raise UserError(f"{ckpt}: its training state does not fit this run ({type(err).__name__}: "
                        f"{str(err)[:150]}); start a new run with another --out") from None
    if not isinstance(state.step, int) or state.step < 0 or not isinstance(state.elapsed_s, (int, float)):
        raise UserError(f"{ckpt}: training.state has an impossible step or time: {training['state']}")
    return state


def _wrap(model: MetaUAS, cfg: TrainConfig, d: distributed.Dist) -> torch.nn.Module:
    net: torch.nn.Module = model
    if d.active:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _save(run_dir: Path, model: MetaUAS, cfg: TrainConfig, state: State, optimizer, scaler) -> Path:
    training = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "state": dataclasses.asdict(state)}
    return save_checkpoint(run_dir / CHECKPOINT, model, size=cfg.size, step=state.step, training=training)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run described by `cfg`; returns `<out>/last.pt`."""
    d = distributed.setup(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        distributed.teardown(d)


@dataclass
class Window:
    """Loss parts summed since the last metrics row, and when that row was written."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    since: float = field(default_factory=time.monotonic)

    def add(self, parts: dict[str, float]) -> None:
        self.sums = {k: self.sums.get(k, 0.0) + v for k, v in parts.items()}
        self.steps += 1


@dataclass
class Run:
    """Everything one training process holds while it runs (built by `_train`)."""

    cfg: TrainConfig
    d: distributed.Dist
    model: MetaUAS
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

    def stamp(self) -> dict:
        return {"step": self.state.step, "elapsed_s": round(self.state.elapsed_s, 2)}

    def validate(self) -> None:
        """Validation metrics to the log; the model to best.pt when its P-AP (real folders'
        if any, else the pairs') is the best yet."""
        if self.validator is None:
            return
        metrics = self.validator(self.model, self.d.device, self.cfg.batch_size)
        self.log.row({**self.stamp(), **metrics})
        ap, best = metrics[self.validator.key], self.state.best_val_p_ap
        if math.isfinite(ap) and (best is None or ap > best):
            self.state.best_val_p_ap, self.state.best_step = ap, self.state.step
            save_checkpoint(self.run_dir / BEST, self.model, size=self.cfg.size, step=self.state.step,
                            extra={"validation": metrics})

    def save(self) -> Path:
        path = _save(self.run_dir, self.model, self.cfg, self.state, self.optimizer, self.scaler)
        self.saved_step = self.state.step
        log.debug("saved %s at step %d", path, self.state.step)
        return path

    def out_of_space(self) -> UserError:
        """A full disk: what is safe, and how to go on."""
        safe = (f"{CHECKPOINT} holds step {self.saved_step}" if self.saved_step is not None
                else "no checkpoint was saved yet")
        return UserError(f"no space left on device in {self.run_dir} at step {self.state.step}: {safe} (the partial "
                         "file was removed); free some space and rerun with --resume to continue from it")


def first_pair(urls: list[str]) -> None:
    """Read until one training pair decodes, before anything is built: shards that are
    all corrupt are one clear error, not an endless or empty stream."""
    stats = ReadStats(quiet=True)
    for _ in iter_pairs(urls, stats):
        return
    raise UserError(f"no readable training pairs in --train ({len(urls)} shard(s)): "
                    f"{stats.summary() or 'the shards hold no samples'}")


def _train(cfg: TrainConfig, d: distributed.Dist) -> Path:
    cfg = cfg.per_process(d.world)  # a global batch split over the processes (config.json records both)
    urls = expand_urls(list(cfg.train) if isinstance(cfg.train, tuple) else cfg.train)
    total = _total_steps(cfg, urls, d.world)
    if total is None and cfg.max_minutes is None:
        raise UserError("say how long to train: --steps, --epochs or --minutes")
    run_dir, payload = _prepare_run_dir(cfg, d)
    first_pair(urls)
    torch.manual_seed(cfg.seed + d.rank)
    model, optimizer, scaler, amp, state = _build(cfg, payload, d)
    if payload is not None and _progress(cfg, state, total, state.elapsed_s, time.monotonic()) >= 1.0:
        log.info("%s is already complete (step %d): nothing to resume", run_dir / CHECKPOINT, state.step)
        return run_dir / CHECKPOINT  # a rerun must not re-save, re-validate or re-log
    validator = _validation(cfg) if d.main else None
    saved_step = None if payload is None else state.step
    run = Run(cfg, d, model, _wrap(model, cfg, d), optimizer, scaler, amp, state, total, run_dir, validator,
              RunLog(run_dir, d.main, saved_step), start_elapsed=state.elapsed_s, saved_step=saved_step)
    stream = StreamConfig(tuple(urls), size=cfg.size, batch_size=cfg.batch_size, workers=cfg.workers,
                          shuffle_buffer=cfg.shuffle_buffer, resampled=cfg.resampled or d.active,
                          seed=cfg.seed, start_step=state.step, augment=cfg.augment,
                          augment_on=augment_place(cfg, d.device))
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
    run.state.elapsed_s = run.start_elapsed + time.monotonic() - run.t0
    values = torch.stack([v.detach().float() for v in parts.values()]).tolist()  # one sync
    return dict(zip(parts, values))


def _log_window(run: Run) -> dict:
    """The metrics row of the steps since the last one (mean loss parts, lr, pairs/s)."""
    w = run.window
    pairs_per_s = w.steps * run.cfg.batch_size * run.d.world / (time.monotonic() - w.since)
    row = {**run.stamp(), **{k: v / w.steps for k, v in w.sums.items()},
           "lr": run.optimizer.param_groups[0]["lr"], "pairs_per_s": pairs_per_s}
    run.log.row(row)
    run.window = Window()
    return row


def _loop(run: Run, batches) -> None:
    """Step until the run's progress reaches 1; log, validate and save on their cadences."""
    from tqdm import tqdm

    cfg, d = run.cfg, run.d
    run.model.train()
    bar = tqdm(total=run.total, initial=run.state.step, disable=not (d.main and cfg.progress),
               unit="step", dynamic_ncols=True)
    while (progress := run.progress()) < 1.0:
        batch = next(batches, None)
        if batch is None:
            raise UserError(f"the training stream ended at step {run.state.step}: every remaining sample was "
                            "skipped as corrupt (see the warnings above)")
        run.window.add(step(run, batch, progress))
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
        export_safetensors(run.model, run.run_dir / "model.safetensors",
                           {"config": run.model.cfg.to_dict(), "size": cfg.size, "step": run.state.step})
    distributed.barrier(d)
