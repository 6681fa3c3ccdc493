"""The frozen encoder: real offline ImageNet weights, frozen state, both stage layouts."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from metauas.errors import UserError
from metauas.model.config import EncoderConfig
from metauas.model.encoder import build_encoder, load_pretrained


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    return (x - 0.5) / 0.5  # tf_efficientnet_lite normalisation


@pytest.mark.parametrize(("photo", "imagenet_class"), [("chelsea", 285), ("coffee", 967)])
def test_offline_weights_classify_real_photos(photo, imagenet_class):
    model = load_pretrained(EncoderConfig()).eval()
    with torch.no_grad():
        logits = model(_imagenet_input(getattr(skimage.data, photo)()))
    assert logits.argmax().item() == imagenet_class


def test_encoder_is_frozen_and_matches_timm_features_only():
    import timm

    enc = build_encoder(EncoderConfig())
    assert enc.channels == [16, 24, 40, 112, 320]
    assert enc.reductions == [2, 4, 8, 16, 32]
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.backbone.training

    reference = timm.create_model("tf_efficientnet_lite0", features_only=True).eval()
    reference.load_state_dict(load_pretrained(EncoderConfig()).state_dict(), strict=False)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ours = enc(x)
        theirs = reference((x - 0.5) / 0.5)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_official_layout_gives_smp_b4_channels():
    enc = build_encoder(EncoderConfig(name="efficientnet_b4", weights="none", layout="official"))
    assert enc.channels == [48, 32, 56, 160, 448]


def test_weights_file_round_trip_and_bad_inputs(tmp_path):
    model = load_pretrained(EncoderConfig(weights="none"))
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    again = load_pretrained(EncoderConfig(weights=str(path)))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="not found"):
        load_pretrained(EncoderConfig(weights=str(tmp_path / "missing.pth")))
    with pytest.raises(UserError, match="do not fit"):
        load_pretrained(EncoderConfig(name="efficientnet_b0", weights=str(path)))
    with pytest.raises(UserError, match="unknown encoder"):
        load_pretrained(EncoderConfig(name="no_such_net", weights="none"))
