"""Turning a trained model into a faster, inference-only one (predict, evaluate, bench).

Measured on a 2-core CPU at 256 px (`metauas bench model`, docs/benchmarks.md): the UNet
decoder's full-resolution 3x3 convolutions dominate, and oneDNN runs them markedly faster in
channels_last; BatchNorm after each decoder conv is a separate memory pass that folds into
the conv's weights once the statistics are frozen; and glibc's allocator, left alone,
returns every freed buffer over 32 MB to the kernel, so a batch's full-resolution
activations page-fault through fresh memory on every call (`keep_freed_buffers`). `torch.compile` (inductor, with frozen
weights) additionally fuses the elementwise work (activations, attention gates, upsampling)
into the convolutions; it costs tens of seconds of compilation per input shape, so it is an
option for long evaluations, not a default.

The result is for inference only: folding replaces BatchNorm layers, so its state dict no
longer matches a checkpoint's, and compiled weights are frozen constants.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from metauas.errors import UserError

if TYPE_CHECKING:  # the model stack is imported by whoever made the model
    from metauas.model.network import MetaUAS


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in an nn.Sequential
    into that conv (the decoder's conv-BN-ReLU units); returns how many were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                folded += 1
    return folded


def prepare_for_inference(model: MetaUAS, *, channels_last: bool = True, compile: bool = False) -> MetaUAS:
    """Make `model` (a MetaUAS, in place) inference-only and faster; returns it.

    Outputs stay equal to the unprepared model's up to float rounding (`metauas bench
    model` reports the largest difference; tested below 1e-4).
    """
    keep_freed_buffers()
    model.eval().requires_grad_(False)
    fold_batchnorm(model.decoder)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        _compile(model)
    return model


def keep_freed_buffers() -> bool:
    """Let glibc serve big tensors from its heap and keep freed ones for the next call.

    By default glibc maps each allocation over (at most) 32 MB fresh from the kernel and
    unmaps it on free; one decoder activation of a 4 x 256 px batch is 4 x 64 x 256 x 256
    floats = 67 MB, so every forward pays page faults on zeroed pages. Raising the mmap
    threshold (and the trim threshold, so the heap's top is not given back either) made
    batched `predict` 1.59x faster on the 2-core dev box (benchmarks/allocator.py,
    docs/benchmarks.md). Process-wide and harmless elsewhere: peak memory is
    the same, it is just not returned to the OS before exit. Returns whether it took
    effect: Linux glibc only, and never over the user's own `MALLOC_*_THRESHOLD_` settings.
    """
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) or any(
        k in os.environ.get("GLIBC_TUNABLES", "") for k in ("mmap_threshold", "trim_threshold")
    )
    if not sys.platform.startswith("linux") or user_set:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def _compile(model: MetaUAS) -> None:
    """Compile encoder and decoder in place (module names, hence weights, unchanged)."""
    try:
        import torch._dynamo  # noqa: F401 - fails where torch.compile is unsupported
    except ImportError as err:
        raise UserError(f"`compile`: torch.compile is unavailable here ({err})") from None
    for part in (model.encoder, model.decoder):
        part.compile(options={"freezing": True})
