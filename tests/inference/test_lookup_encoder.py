"""The lookup on its own encoder (`LookupConfig.encoder`, lite2 by default): `mix` pairs
it with the checkpoint's encoder, and each map is the one its method computes alone."""

from __future__ import annotations

import pytest
import torch

from metauas.errors import UserError
from metauas.inference.config import METHODS, MIX_WEIGHT, LookupConfig
from metauas.inference.lookup import PairedEncoder
from metauas.inference.scoring import build_scorer, load_tensor

CPU = torch.device("cpu")


def _maps(scorer, prompt, query) -> dict[str, torch.Tensor]:
    return scorer.maps([scorer.features(prompt)], scorer.features(query), (64, 64))


@pytest.fixture(scope="module")
def pair(mvtec_root):
    tile = mvtec_root / "tile"
    return load_tensor(tile / "train/good/000.png", 64)[None], load_tensor(tile / "test/blob/001.png", 64)[None]


def test_mix_blends_the_models_map_with_the_lookup_on_its_own_encoder(checkpoint, pair):
    both, _ = build_scorer(checkpoint, METHODS, "features", LookupConfig(), CPU)
    assert isinstance(both.encoder, PairedEncoder)  # the checkpoint's encoder is lite0 (random weights)
    maps = _maps(both, *pair)
    alone, _ = build_scorer(None, ("lookup",), "features", LookupConfig(), CPU)
    model, _ = build_scorer(checkpoint, ("model",), "features", LookupConfig(), CPU)
    assert not isinstance(alone.encoder, PairedEncoder) and not isinstance(model.encoder, PairedEncoder)
    lookup = _maps(alone, *pair)["lookup"]
    torch.testing.assert_close(maps["lookup"], lookup, atol=1e-6, rtol=0)
    torch.testing.assert_close(maps["model"], _maps(model, *pair)["model"], atol=1e-6, rtol=0)
    expected = maps["model"] ** (1 - MIX_WEIGHT) * lookup**MIX_WEIGHT
    torch.testing.assert_close(maps["mix"], expected, atol=1e-6, rtol=0)
    # the shared encoder's lookup is another map: the lite2 lookup is not the model's
    shared, _ = build_scorer(checkpoint, METHODS, "features", LookupConfig(encoder="model"), CPU)
    assert not isinstance(shared.encoder, PairedEncoder)
    assert float((_maps(shared, *pair)["lookup"] - lookup).abs().max()) > 1e-2


def test_the_efficiency_line_counts_each_methods_own_encoders(checkpoint, pair):
    scorer, _ = build_scorer(checkpoint, METHODS, "features", LookupConfig(), CPU)
    _maps(scorer, *pair)
    eff = scorer.efficiency(64)
    lite2 = sum(p.numel() for p in scorer.encoder.lookup.parameters())
    assert eff["lookup"]["parameters"]["total"] == lite2
    assert eff["mix"]["parameters"]["total"] == eff["model"]["parameters"]["total"] + lite2
    seconds = scorer.seconds
    assert seconds["lookup encoder"] > 0 and seconds["encoder"] > 0
    ms = {m: eff[m]["ms_per_image"] / 1000 for m in METHODS}
    assert ms["model"] == pytest.approx(seconds["encoder"] + seconds["model"])
    assert ms["lookup"] == pytest.approx(seconds["lookup encoder"] + seconds["lookup"])
    assert ms["mix"] == pytest.approx(sum(seconds.values()))


def test_an_unknown_lookup_encoder_is_a_clear_error(checkpoint):
    with pytest.raises(UserError, match="unknown encoder 'no_such_net'"):
        build_scorer(checkpoint, ("mix",), "features", LookupConfig(encoder="no_such_net"), CPU)
    with pytest.raises(UserError, match="lookup encoder"):
        LookupConfig(encoder=" ")
