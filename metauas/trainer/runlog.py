"""The run's log: metrics.jsonl always, TensorBoard beside it when installed, and the
window of loss parts a metrics row averages."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from metauas.outputs import write_atomic

log = logging.getLogger("metauas.train")


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
                self.writer = SummaryWriter(
                    str(run_dir / "tensorboard"), purge_step=0 if saved_step is None else saved_step + 1
                )

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
        except (ValueError, RecursionError):
            continue
        if (
            saved_step is not None
            and isinstance(row, dict)
            and isinstance(row.get("step"), int)
            and row["step"] <= saved_step
        ):
            kept.append(line + "\n")
    write_atomic(path, "".join(kept).encode())


@dataclass
class Window:
    """Loss parts summed since the last metrics row, and when that row was written."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    since: float = field(default_factory=time.monotonic)

    def add(self, parts: dict[str, float]) -> None:
        self.sums = {k: self.sums.get(k, 0.0) + v for k, v in parts.items()}
        self.steps += 1
