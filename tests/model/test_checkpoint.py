"""Checkpoints: identical outputs after a round trip, safetensors export, clear errors."""

import pytest
import torch
from make_data import tiny_model_config
from safetensors.torch import load_file

from metauas.errors import UserError
from metauas.model.checkpoint import export_safetensors, load_model, save_checkpoint
from metauas.model.network import MetaUAS


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config(alignment="hard", fusion="add"))
    with torch.no_grad():  # move BatchNorm statistics and weights away from their init
        for p in model.learnable_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.train()(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    path = save_checkpoint(tmp_path / "c.pt", model, size=64, step=7)
    again, meta = load_model(path)
    assert meta["step"] == 7 and meta["size"] == 64 and meta["config"]["fusion"] == "add"
    assert {"torch", "timm", "metauas"} <= set(meta["versions"])
    assert again.cfg == model.cfg and not again.training
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.equal(model.eval()(x, y), again(x, y))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp left

    exported = load_file(str(export_safetensors(again, tmp_path / "w.safetensors", meta)))
    assert exported and not any(k.startswith("encoder.") for k in exported)
    for key, value in exported.items():
        assert torch.equal(value, again.state_dict()[key])


def test_missing_and_corrupt_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    # plain text and random bytes make torch raise KeyError / UnpicklingError / RuntimeError
    for content in (b"not a checkpoint at all", b"hello\n", bytes(range(256)) * 3):
        bad.write_bytes(content)
        with pytest.raises(UserError, match="corrupt or not a checkpoint") as caught:
            load_model(bad)
        assert "\n" not in str(caught.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not a metauas checkpoint"):
        load_model(foreign)
