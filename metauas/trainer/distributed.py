"""torch.distributed setup for `metauas train` as one process or under torchrun.

torchrun (or any launcher) sets RANK, WORLD_SIZE and LOCAL_RANK; with WORLD_SIZE > 1 we
join the process group: NCCL with one GPU per process when CUDA is there, gloo on CPU.
Without those variables the same code runs as a single process, no group needed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metauas.devices import resolve_device
from metauas.errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, validates and saves."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group described by the environment (if any); pick the device
    (`devices.resolve_device`; under torchrun each process takes its LOCAL_RANK's GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and ":" in device:
        raise UserError(
            f"`device` {device}: under torchrun each process uses the GPU of its LOCAL_RANK; "
            "give cuda or auto (and CUDA_VISIBLE_DEVICES to choose GPUs)"
        )
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60)
        )
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_float(d: Dist, value: float) -> float:
    """Rank 0's value on every rank (time budgets must end all ranks at the same step)."""
    if not d.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
