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

from metauas.changegen.format import count_samples, expand_urls
from metauas.errors import UserError
from metauas.evaluation.metrics import pixel_auroc_ap
from metauas.model.checkpoint import export_safetensors, read_checkpoint, save_checkpoint, set_rng_state
from metauas.model.network import MetaUAS, ModelConfig, cosine_distance
from metauas.trainer import distributed
from metauas.trainer.augment import AugmentConfig
from metauas.trainer.stream import StreamConfig, resized_pairs, to_float, train_loader

log = logging.getLogger("metauas.train")
CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Length: `steps`, or `epochs` over the training shards, and/or
    a wall-clock budget `max_minutes` (training stops at whichever comes first)."""

    train: str | tuple[str, ...]
    out: str
    val: str | tuple[str, ...] | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    size: int = 256
    batch_size: int = 8  # per process
    steps: int | None = None
    epochs: float | None = None
    max_minutes: float | None = None
    lr: float = 1e-4
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    dice_weight: float = 0.0  # loss = BCE + dice_weight * soft Dice
    lookup_weight: float = 0.0  # + lookup_weight * (L_query + 0.1 L_CQC), see lookup_losses
    cqc_margin: float = 0.1  # CQC hinge margin, in 1 - cos units (0..2)
    amp: str = "auto"  # auto (bf16, else fp16, on CUDA; off on CPU) | bf16 | fp16 | off
    compile: bool = False
    workers: int = 2  # DataLoader processes per training process
    shuffle_buffer: int = 1000
    resampled: bool = False  # forced on under >1 process or with fewer shards than readers
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_every: int = 500
    val_pairs: int = 256
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    progress: bool = True
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        """Reject impossible settings up front, not an hour into a run."""
        positive = {"--size": self.size, "--batch-size": self.batch_size, "--val-every": self.val_every,
                    "--val-pairs": self.val_pairs, "--save-every": self.save_every,
                    "--log-every": self.log_every, "--lr": self.lr, "--steps": self.steps,
                    "--epochs": self.epochs, "--minutes": self.max_minutes}
        for option, value in positive.items():
            if value is not None and value <= 0:
                raise UserError(f"{option} must be positive, got {value}")
        for option, value in {"--weight-decay": self.weight_decay, "--warmup": self.warmup_steps,
                              "--dice": self.dice_weight, "--workers": self.workers,
                              "--lookup-weight": self.lookup_weight, "--cqc-margin": self.cqc_margin,
                              "--shuffle-buffer": self.shuffle_buffer}.items():
            if value < 0:
                raise UserError(f"{option} must not be negative, got {value}")
        if self.size < 32:
            raise UserError(f"--size must be at least 32 (the encoder downsamples 32x), got {self.size}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise UserError(f"unknown --amp {self.amp!r}: use auto|bf16|fp16|off")
        if self.lookup_weight > 0 and self.model.alignment == "none":
            raise UserError("--lookup-weight needs a lookup to train: use an alignment other than none")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


class RunLog:
    """metrics.jsonl in the run dir, always, and TensorBoard event files beside it when
    tensorboard is installed (the `tensorboard` extra). Rank 0 only; other ranks no-op."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if enabled:
            self.file = open(run_dir / "metrics.jsonl", "a")
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # torch's module needs the tensorboard package
                log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def row(self, row: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace("val_", "val/"), value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


@dataclass
class State:
    """What resuming restores besides the weights: step and time used so far."""

    step: int = 0
    elapsed_s: float = 0.0


def _prepare_run_dir(cfg: TrainConfig, d: distributed.Dist) -> tuple[Path, dict | None]:
    run_dir = Path(cfg.out)
    ckpt = run_dir / CHECKPOINT
    if ckpt.exists() and not cfg.resume:
        raise UserError(f"{run_dir} already holds a run ({CHECKPOINT}); pass --resume or a new --out")
    payload = read_checkpoint(ckpt) if cfg.resume and ckpt.exists() else None
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    return run_dir, payload


def _build(cfg: TrainConfig, payload: dict | None, d: distributed.Dist):
    """Model (fresh, or the checkpoint's config and weights), optimiser and AMP scaler."""
    model_cfg = cfg.model
    if payload is not None:
        saved = ModelConfig.from_dict(payload["meta"]["config"])
        if saved != model_cfg and d.main:
            log.warning("resuming with the checkpoint's model config, not the options given")
        model_cfg = dataclasses.replace(saved, encoder=dataclasses.replace(saved.encoder, weights="none"))
    model = MetaUAS(model_cfg)
    if payload is not None:
        model.load_state_dict(payload["model"])
        model.cfg = ModelConfig.from_dict(payload["meta"]["config"])
    model.to(d.device)
    if d.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.learnable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = _amp_dtype(cfg, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp == torch.float16)
    state = State()
    if payload is not None:
        training = payload["training"]
        optimizer.load_state_dict(training["optimizer"])
        scaler.load_state_dict(training["scaler"])
        state = State(**training["state"])
        set_rng_state(training["rng"])
    return model, optimizer, scaler, amp, state


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


def _train(cfg: TrainConfig, d: distributed.Dist) -> Path:
    urls = expand_urls(list(cfg.train) if isinstance(cfg.train, tuple) else cfg.train)
    total = _total_steps(cfg, urls, d.world)
    if total is None and cfg.max_minutes is None:
        raise UserError("say how long to train: --steps, --epochs or --minutes")
    run_dir, payload = _prepare_run_dir(cfg, d)
    torch.manual_seed(cfg.seed + d.rank)
    model, optimizer, scaler, amp, state = _build(cfg, payload, d)
    if payload is not None and _progress(cfg, state, total, state.elapsed_s, time.monotonic()) >= 1.0:
        log.info("%s is already complete (step %d): nothing to resume", run_dir / CHECKPOINT, state.step)
        return run_dir / CHECKPOINT  # a rerun must not re-save, re-validate or re-log
    net = _wrap(model, cfg, d)
    validator = Validator(cfg.val, cfg.size, cfg.val_pairs) if cfg.val and d.main else None
    runlog = RunLog(run_dir, d.main)
    if validator is not None and payload is None:  # the untrained baseline, for comparison
        runlog.row({"step": 0, "elapsed_s": 0.0, **validator(model, d.device, cfg.batch_size)})
    stream = StreamConfig(tuple(urls), size=cfg.size, batch_size=cfg.batch_size, workers=cfg.workers,
                          shuffle_buffer=cfg.shuffle_buffer, resampled=cfg.resampled or d.active,
                          seed=cfg.seed, start_step=state.step, augment=cfg.augment)
    batches = iter(train_loader(stream))
    try:
        _loop(cfg, d, net, model, optimizer, scaler, amp, state, total, batches, validator, runlog, run_dir)
    finally:
        runlog.close()
    return run_dir / CHECKPOINT


def _progress(cfg: TrainConfig, state: State, total: int | None, start_elapsed: float, t0: float) -> float:
    """Fraction of the run done: by steps, by wall clock, whichever is further."""
    by_steps = state.step / total if total else 0.0
    by_time = (start_elapsed + time.monotonic() - t0) / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
    return max(by_steps, by_time)


def _loop(cfg, d, net, model, optimizer, scaler, amp, state, total, batches, validator, runlog, run_dir):
    from tqdm import tqdm

    model.train()
    t0, start_elapsed = time.monotonic(), state.elapsed_s
    bar = tqdm(total=total, initial=state.step, disable=not (d.main and cfg.progress),
               unit="step", dynamic_ncols=True)
    window_sums, window_steps, window_t = {}, 0, time.monotonic()
    channels_last = d.device.type == "cuda"
    while True:
        progress = _progress(cfg, state, total, start_elapsed, t0)
        if cfg.max_minutes:  # clocks differ: rank 0's decides, or ranks would hang apart
            progress = distributed.broadcast_float(d, progress)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, state.step, progress)
        batch = next(batches)
        prompt, query = (to_float(batch[k], d.device) for k in ("prompt", "query"))
        if channels_last:
            prompt, query = (x.contiguous(memory_format=torch.channels_last) for x in (prompt, query))
        masks = batch["mask"].to(d.device, non_blocking=True).float()
        autocast = torch.autocast(d.device.type, dtype=amp) if amp is not None else nullcontext()
        with autocast:
            if cfg.lookup_weight > 0:
                logits, pairs = net(prompt, query, return_aligned=True)
            else:
                logits, pairs = net(prompt, query), None
        loss, parts = training_loss(logits, pairs, masks, cfg)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.learnable_parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state.step += 1
        state.elapsed_s = start_elapsed + time.monotonic() - t0
        values = torch.stack([v.detach().float() for v in parts.values()]).tolist()  # one sync
        window_sums = {k: window_sums.get(k, 0.0) + v for k, v in zip(parts, values)}
        window_steps += 1
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == total:
            pairs_per_s = window_steps * cfg.batch_size * d.world / (time.monotonic() - window_t)
            row = {"step": state.step, "elapsed_s": round(state.elapsed_s, 2),
                   **{k: v / window_steps for k, v in window_sums.items()},
                   "lr": optimizer.param_groups[0]["lr"], "pairs_per_s": pairs_per_s}
            runlog.row(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", pairs_s=f"{pairs_per_s:.1f}")
            window_sums, window_steps, window_t = {}, 0, time.monotonic()
        if validator is not None and state.step % cfg.val_every == 0:
            runlog.row({"step": state.step, "elapsed_s": round(state.elapsed_s, 2),
                        **validator(model, d.device, cfg.batch_size)})
        if d.main and state.step % cfg.save_every == 0:
            _save(run_dir, model, cfg, state, optimizer, scaler)
    bar.close()
    if d.main:
        if validator is not None and state.step % cfg.val_every != 0:
            runlog.row({"step": state.step, "elapsed_s": round(state.elapsed_s, 2),
                        **validator(model, d.device, cfg.batch_size)})
        _save(run_dir, model, cfg, state, optimizer, scaler)
        export_safetensors(model, run_dir / "model.safetensors",
                           {"config": model.cfg.to_dict(), "size": cfg.size, "step": state.step})
    distributed.barrier(d)
