"""A stand-in for the paper authors' checkpoint (gaobb/MetaUAS `metauas-256.ckpt`,
`metauas-512.ckpt`), which cannot be downloaded here.

The reference is built from segmentation_models_pytorch's own parts, as the official code
builds it (smp's lukemelas EfficientNet-b4 encoder with its static "same" padding, smp's
UNet decoder with the three deepest stages doubled by `cat` fusion, three 1x1 alignment
projections under the official names, a 1x1 mask head), with random weights and BatchNorm
statistics; its state dict has the official checkpoint's key names and shapes.
`official_reference()` builds it, `save_official()` writes it as the authors' file.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # smp's imagenet params


class _Projection(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dimensionality_reduction = nn.Conv2d(channels, channels // 2, 1)


class _Alignment(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alignment_layer = _Projection(channels)


class OfficialReference(nn.Module):
    """The official MetaUAS("efficientnet-b4", "unet", 5, 5, 3, "sa", "cat") forward."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = smp.encoders.get_encoder("efficientnet-b4", in_channels=3, depth=5, weights=None)
        self.alignment = nn.ModuleList(_Alignment(c) for c in (448, 160, 56))  # deepest first
        # smp 0.2.1 + num_coam_layers=3 doubles the three deepest stages' channels
        self.decoder = UnetDecoder(
            [3, 48, 32, 2 * 56, 2 * 160, 2 * 448], [256, 128, 64, 64, 48], n_blocks=5, attention_type="scse"
        )
        self.mask_head = nn.Conv2d(48, 1, 1)

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        q, p = self.encoder((query - mean) / std), self.encoder((prompt - mean) / std)
        for i, module in enumerate(self.alignment):
            level = len(q) - 1 - i
            project = module.alignment_layer.dimensionality_reduction
            sim = torch.einsum("bcij,bcm->bijm", project(q[level]), project(p[level]).flatten(2))
            aligned = torch.einsum("bijm,bcm->bcij", sim.softmax(dim=-1), p[level].flatten(2))
            q[level] = torch.cat([q[level], aligned], dim=1)
        return self.mask_head(self.decoder(q)).sigmoid()


def randomise(ref: OfficialReference) -> None:
    """Weights whose outputs spread over (0, 1), and BatchNorm statistics far from the
    init, so every tensor of the mapping (BN buffers included) shows in the output."""
    with torch.no_grad():
        for m in [*ref.decoder.modules(), ref.mask_head]:  # He init: keep the decoder's scale
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(7)


def official_reference(seed: int = 0) -> OfficialReference:
    """The reference with random weights spread as `randomise` spreads them, in eval mode."""
    torch.manual_seed(seed)
    ref = OfficialReference()
    randomise(ref)
    return ref.eval()


def save_official(reference: OfficialReference, path: Path) -> Path:
    """The reference's state dict saved as the official file, in Lightning's wrapper."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, path)
    return path
