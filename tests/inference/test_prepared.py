"""The inference-only model (folded BatchNorm, channels_last, optional torch.compile) gives
the trained model's maps: predict/evaluate/demo all run through it."""

import copy
import shutil
import sys

import pytest
import torch
from make_data import tiny_model_config
from torch import nn

from metauas.inference.prepared import fold_batchnorm, keep_freed_buffers, prepare_for_inference
from metauas.model.network import MetaUAS


def _trained_looking_model(**overrides) -> MetaUAS:
    """Random BatchNorm statistics and affine parameters, as training leaves them: folding
    a fresh BN (mean 0, var 1, identity affine) would hide a wrong formula."""
    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config(**overrides)).eval()
    for bn in (m for m in model.decoder.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return model


def _assert_same_maps(model: MetaUAS, fast: MetaUAS) -> None:
    prompts, queries = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    assert torch.allclose(fast.predict(prompts, queries), model.predict(prompts, queries), atol=1e-5)
    with torch.inference_mode():  # one prompt shared by all queries (batch-1 prompt features)
        shared = [
            fast.segment(fast.encode(prompts[:1]), fast.encode(queries)),
            model.segment(model.encode(prompts[:1]), model.encode(queries)),
        ]
    assert torch.allclose(shared[0], shared[1], atol=1e-4)


@pytest.mark.parametrize("fusion", ["cat", "cat+absdiff+cos"])
def test_prepared_model_gives_the_same_maps_with_every_decoder_batchnorm_folded(fusion):
    model = _trained_looking_model(fusion=fusion)
    fast = prepare_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.decoder.modules())
    assert fast.decoder.blocks[0].conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same_maps(model, fast)


def test_folding_touches_only_conv_batchnorm_pairs():
    convs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    assert fold_batchnorm(convs.eval()) == 1
    assert isinstance(convs[1], nn.Identity) and isinstance(convs[3], nn.BatchNorm2d)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_compiled_model_gives_the_same_maps():
    model = _trained_looking_model()
    _assert_same_maps(model, prepare_for_inference(copy.deepcopy(model), compile=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_setting_takes_effect_on_glibc_and_respects_the_users_own(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_buffers() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_buffers() is False
