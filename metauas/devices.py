"""The one place a device name given by a user becomes a torch device.

`--device` means the same in train, predict, evaluate and the LaMa inpainter: `auto`
(CUDA when present, else CPU), `cpu`, `cuda` (the current CUDA device, or under torchrun
this process's LOCAL_RANK) or `cuda:N`. A device that is not there is a one-line error,
never a silent fall-back to the CPU and never a driver traceback. torch is imported
inside the function, so the torch-free parts of the package can import this module.
"""

from __future__ import annotations

import re

from metauas.errors import UserError

CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(name: str, local_rank: int | None = None):
    """A `torch.device` for `name`; `local_rank` (torchrun) picks the GPU for auto/cuda."""
    import torch

    name = name.strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise UserError(f"unknown `device` {name!r}: use {CHOICES}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"`device` {name}: no CUDA device is available here (use cpu or auto)")
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else (local_rank or 0)
    if index >= count:
        raise UserError(f"`device` {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def describe(device) -> str:
    """The device in words for reports: the GPU's name, or the CPU and its threads."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
