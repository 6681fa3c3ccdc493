"""Load the paper authors' checkpoint (gaobb/MetaUAS `metauas-256.ckpt`, `metauas-512.ckpt`).

The official file is a plain state dict of their LightningModule (sometimes wrapped as
Lightning's `{"state_dict": ...}`): smp's lukemelas EfficientNet-b4 encoder, three
alignment projections (deepest first), smp's UNet decoder and a 1x1 mask head. Our model
has the same layers under other names, so converting is renaming, with three deliberate
differences:

- the encoder becomes timm's `tf_efficientnet_b4` (same TF-ported layers, BN eps 1e-3),
  with its stride-2 convs padded as lukemelas pads them for 380 px (`static_pad_size`);
- official `alignment.{i}` is our `alignments.{n-1-i}` (we order stages shallow to deep);
- keys the official model stores but never runs are dropped: the encoder's final
  `_conv_head`/`_bn1` (timm prunes them) and the last decoder block's `attention1` (that
  block has no skip, so smp creates the attention and skips it).

Anything else that does not line up is a `UserError`: the file is not what we convert.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from metauas.errors import UserError
from metauas.model.config import EncoderConfig, ModelConfig
from metauas.model.files import load_weights_file
from metauas.model.network import MetaUAS

OFFICIAL_SIZE = 380  # lukemelas's image_size for efficientnet-b4: its static padding's size
OFFICIAL_CONFIG = ModelConfig(
    encoder=EncoderConfig(name="tf_efficientnet_b4", weights="none", layout="official", static_pad_size=OFFICIAL_SIZE),
    alignment="soft",
    fusion="cat",
    decoder_channels=(256, 128, 64, 64, 48),
    attention="scse",
    aligned_stages=3,
    discrepancy_stages=(),
)
# official keys the official forward never uses
_UNUSED = re.compile(r"^encoder\._(conv_head|bn1)\.|^decoder\.blocks\.4\.attention1\.")
# lukemelas MBConv layer -> timm layer, for blocks with an expansion conv (InvertedResidual)
# and without one (DepthwiseSeparableConv, expand ratio 1)
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# smp decoder attention (SCSEModule) -> ours (SCSE)
_SCSE = {"cSE": "channel_gate", "sSE": "spatial_gate"}


def _block_names(backbone: Any) -> list[tuple[str, dict[str, str]]]:  # a timm EfficientNet
    """timm prefix and layer-name table of each MBConv block, in lukemelas's flat order."""
    return [
        (f"blocks.{s}.{j}", _EXPANDED if hasattr(block, "conv_pwl") else _DEPTHWISE)
        for s, stage in enumerate(backbone.blocks)
        for j, block in enumerate(stage)
    ]


def _encoder_key(rest: str, blocks: list[tuple[str, dict[str, str]]]) -> str | None:
    """Our backbone key for a lukemelas key (without `encoder.`), None if it has none."""
    stem = {"_conv_stem": "conv_stem", "_bn0": "bn1"}
    layer, _, param = rest.partition(".")
    if layer in stem:
        return f"{stem[layer]}.{param}"
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", rest)
    if match is None or int(match[1]) >= len(blocks):
        return None
    prefix, table = blocks[int(match[1])]
    return f"{prefix}.{table[match[2]]}.{match[3]}" if match[2] in table else None


def our_key(key: str, blocks: list[tuple[str, dict[str, str]]], stages: int) -> str | None:
    """Our state dict key for an official one; None for a key we do not know."""
    group, _, rest = key.partition(".")
    if group == "encoder":
        mapped = _encoder_key(rest, blocks)
        return f"encoder.backbone.{mapped}" if mapped else None
    if match := re.fullmatch(r"alignment\.(\d+)\.alignment_layer\.dimensionality_reduction\.(\w+)", key):
        return f"alignments.{stages - 1 - int(match[1])}.project.{match[2]}"
    if match := re.fullmatch(r"(decoder\.blocks\.\d+\.attention\d)\.attention\.(cSE|sSE)\.(.+)", key):
        return f"{match[1]}.{_SCSE[match[2]]}.{match[3]}"
    if re.fullmatch(r"decoder\.blocks\.\d+\.conv\d\.\d\.\w+", key):
        return key  # smp's Conv2dReLU (conv, BN, ReLU) is ours too
    if match := re.fullmatch(r"mask_head\.(weight|bias)", key):
        return f"head.{match[1]}"
    return None


def size_from_name(path: Path) -> int | None:
    """The training size a file name states (`metauas-512.ckpt` -> 512): a number of 3-4
    digits, multiple of 32, standing alone; None if there is none or more than one."""
    sizes = {int(n) for n in re.findall(r"(?<!\d)(\d{3,4})(?!\d)", path.stem) if int(n) % 32 == 0}
    return sizes.pop() if len(sizes) == 1 else None


def official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The official file's state dict (Lightning's wrapper removed)."""
    state = load_weights_file(path, "official checkpoint", "an official MetaUAS checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not an official MetaUAS checkpoint: it holds no state dict")
    return state


def convert(state: dict[str, torch.Tensor], model: MetaUAS, source: str) -> dict[str, torch.Tensor]:
    """The official state dict renamed to `model`'s keys, every key and shape checked."""

    def reject(why: str) -> UserError:
        return UserError(f"{source} is not an official MetaUAS checkpoint: {why}")

    blocks, stages = _block_names(model.encoder.backbone), model.cfg.aligned_stages
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _UNUSED.search(key):
            continue
        ours = our_key(key, blocks, stages)
        if ours not in target:
            raise reject(f"unexpected key {key}")
        if value.shape != target[ours].shape:
            raise reject(f"{key} has shape {tuple(value.shape)}, expected {tuple(target[ours].shape)}")
        out[ours] = value
    if missing := [k for k in target if k not in out]:
        raise reject(f"{len(missing)} weight(s) missing (first, in our names: {missing[0]})")
    return out


def load_official(path: str | Path) -> MetaUAS:
    """Our MetaUAS with the official checkpoint's weights, in eval mode."""
    path = Path(path)
    state = official_state_dict(path)
    model = MetaUAS(OFFICIAL_CONFIG)
    model.load_state_dict(convert(state, model, str(path)))
    return model.eval()
