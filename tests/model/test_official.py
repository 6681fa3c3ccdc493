"""The official MetaUAS checkpoint: converted weights reproduce the official architecture.

The reference (`tests/official_reference.py`) is built from segmentation_models_pytorch's
own parts, as the official code builds it, with random weights and BatchNorm statistics;
its state dict has the official checkpoint's key names and shapes.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from official_reference import OfficialReference, official_reference, save_official
from torch import nn

from metauas.cli import main
from metauas.errors import UserError
from metauas.model.checkpoint import FORMAT, load_model
from metauas.model.network import MetaUAS
from metauas.model.official import OFFICIAL_CONFIG, convert, load_official


@pytest.fixture(scope="module")
def reference() -> OfficialReference:
    return official_reference()


@pytest.fixture(scope="module")
def official_file(reference, tmp_path_factory):
    return save_official(reference, tmp_path_factory.mktemp("official") / "metauas-512.ckpt")


def _pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(size)
    return torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)


def _max_diff(reference: nn.Module, model: MetaUAS, size: int) -> float:
    prompt, query = _pair(size)
    with torch.no_grad():
        expected = reference(prompt, query)
    return (model.predict(prompt, query) - expected).abs().max().item()


def test_converted_weights_reproduce_the_official_model(reference, official_file):
    model = load_official(official_file)
    assert model.cfg == OFFICIAL_CONFIG
    assert _max_diff(reference, model, 256) < 1e-4  # measured 9.5e-7
    assert _max_diff(reference, model, 192) < 1e-4


def test_official_padding_is_needed(reference):
    """timm's dynamic "same" padding shifts the first 5x5 stride-2 conv's grid (its input
    is 64 px at 256, 95 px in lukemelas's 380 px assumption): a visible difference."""
    cfg = dataclasses.replace(OFFICIAL_CONFIG, encoder=dataclasses.replace(OFFICIAL_CONFIG.encoder, static_pad_size=0))
    model = MetaUAS(cfg)
    model.load_state_dict(convert(reference.state_dict(), model, "reference"))
    assert _max_diff(reference, model.eval(), 256) > 1e-4  # measured 1.2e-3


def test_import_official_writes_a_checkpoint_predict_uses(reference, official_file, tmp_path, capsys):
    out = tmp_path / "official.pt"
    assert main(["import-official", str(official_file), "--out", str(out)]) == 0
    assert "size 512" in capsys.readouterr().out  # from the file name
    model, meta = load_model(out)
    assert meta["official"] and meta["size"] == 512 and meta["source"].endswith("metauas-512.ckpt")
    assert model.cfg.encoder.static_pad_size == 380
    assert _max_diff(reference, model, 256) < 1e-4


def _assert_one_line_error(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


def test_wrong_files_are_one_line_errors(tmp_path, capsys):
    out = ["--out", str(tmp_path / "o.pt")]
    _assert_one_line_error(["import-official", str(tmp_path / "none.ckpt"), *out], capsys, "not found")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    _assert_one_line_error(["import-official", str(text), *out], capsys, "not an official MetaUAS checkpoint")

    ours = tmp_path / "ours.pt"  # a metauas checkpoint's layout, not a state dict
    torch.save({"meta": {"format": FORMAT}, "model": {"head.bias": torch.zeros(1)}}, ours)
    _assert_one_line_error(["import-official", str(ours), *out], capsys, "holds no state dict")
    other = tmp_path / "other.pth"  # some other model's state dict
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    _assert_one_line_error(["import-official", str(other), *out], capsys, "unexpected key fc.weight")
    assert not (tmp_path / "o.pt").exists()


def test_missing_unexpected_and_misshapen_keys_are_named(reference):
    model = MetaUAS(OFFICIAL_CONFIG)
    state = reference.state_dict()
    with pytest.raises(UserError, match="unexpected key encoder._fc.weight"):
        convert({**state, "encoder._fc.weight": torch.zeros(1000, 1792)}, model, "f")
    with pytest.raises(UserError, match=r"mask_head.weight has shape \(2, 48, 1, 1\)"):
        convert({**state, "mask_head.weight": torch.zeros(2, 48, 1, 1)}, model, "f")
    del state["alignment.0.alignment_layer.dimensionality_reduction.bias"]
    with pytest.raises(UserError, match=r"1 weight\(s\) missing \(first, in our names: alignments.2.project.bias"):
        convert(state, model, "f")


def _paper_model_config():
    """The model `metauas train --recipe paper` builds (random encoder weights)."""
    from metauas.configs import from_cli
    from metauas.recipes import recipe
    from metauas.trainer.config import TrainConfig

    given = {**recipe("paper", "train"), "train": "x", "out": "y", "model.encoder.weights": "none"}
    return from_cli(TrainConfig, given, set(given)).model


def test_the_paper_recipe_trains_the_encoder_import_official_builds(reference, official_file):
    """Same architecture (keys, shapes) and, on the same weights, the same forward."""
    cfg = _paper_model_config()
    assert cfg.encoder.name.split(".")[0] == OFFICIAL_CONFIG.encoder.name  # + the weights' timm tag
    assert dataclasses.replace(cfg, encoder=OFFICIAL_CONFIG.encoder) == OFFICIAL_CONFIG
    trained, imported = MetaUAS(cfg), load_official(official_file)
    ours, theirs = trained.state_dict(), imported.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    trained.load_state_dict(theirs)
    prompt, query = _pair(64)
    assert torch.equal(trained.eval().predict(prompt, query), imported.predict(prompt, query))


def test_lukemelas_weights_file_loads_by_position(tmp_path):
    """--encoder-weights FILE with the weights smp downloads for the authors' encoder
    (lukemelas names, classifier included) lands tensor by tensor where import-official's
    key mapping puts them."""
    from metauas.model.encoder import build_encoder
    from metauas.model.official import _block_names, _encoder_key

    torch.manual_seed(1)
    luke = smp.encoders.get_encoder("efficientnet-b4", in_channels=3, depth=5, weights=None).state_dict()
    luke = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in luke.items()}
    luke |= {"_fc.weight": torch.randn(1000, 1792), "_fc.bias": torch.randn(1000)}
    torch.save(luke, tmp_path / "efficientnet-b4-6ed6700e.pth")
    encoder = build_encoder(
        dataclasses.replace(_paper_model_config().encoder, weights=str(tmp_path / "efficientnet-b4-6ed6700e.pth"))
    )
    ours = encoder.backbone.state_dict()
    blocks = _block_names(encoder.backbone)
    checked = 0
    for key, value in luke.items():
        mapped = _encoder_key(key, blocks)
        if mapped in ours:
            assert torch.equal(ours[mapped], value), key
            checked += 1
    assert checked > 600


def _train_config(monkeypatch, *args):
    """The TrainConfig `metauas train ARGS` would run (training itself stubbed out)."""
    import metauas.trainer.train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg: seen.setdefault("cfg", cfg))
    assert main(["train", "--train", "x", "--out", "y", *args]) == 0
    return seen["cfg"]


def test_encoder_official_and_the_paper_recipe_on_the_command_line(monkeypatch, capsys):
    cfg = _train_config(monkeypatch, "--encoder", "official")
    assert (cfg.model.encoder.name, cfg.model.encoder.layout, cfg.model.encoder.static_pad_size) == (
        "tf_efficientnet_b4.aa_in1k",
        "official",
        380,
    )
    assert (
        _train_config(monkeypatch, "--encoder", "official", "--static-pad-size", "0").model.encoder.static_pad_size == 0
    )

    paper = _train_config(monkeypatch, "--recipe", "paper")
    assert paper.model == dataclasses.replace(_paper_model_config(), encoder=paper.model.encoder)
    assert (paper.global_batch_size, paper.epochs, paper.lr, paper.weight_decay, paper.size) == (
        128,
        30,
        1e-4,
        5e-4,
        256,
    )
    toy = _train_config(monkeypatch, "--recipe", "paper", "--fusion", "cat+cos", "--size", "64", "--batch-size", "2")
    assert (toy.model.fusion, toy.size, toy.batch_size, toy.global_batch_size, toy.epochs) == (
        "cat+cos",
        64,
        2,
        None,
        30,
    )
    assert main(["train", "--train", "x", "--out", "y", "--batch-size", "2", "--global-batch-size", "8"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_global_batch_splits_over_the_processes():
    from metauas.trainer.config import TrainConfig

    cfg = TrainConfig(train="x", out="y", global_batch_size=128)
    assert [cfg.per_process(w).batch_size for w in (1, 2, 8, 16)] == [128, 64, 16, 8]
    assert TrainConfig(train="x", out="y", batch_size=5).per_process(8).batch_size == 5
    with pytest.raises(UserError, match="does not split over 3 processes"):
        cfg.per_process(3)


def _hub_run(code: str, env_dirs: dict[str, Path]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "METAUAS_"))}
    env.update({name: str(path) for name, path in env_dirs.items()}, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # two fresh interpreters load b4 and convert: about a minute
def test_pretrained_names_load_from_the_hub_cache_and_convert_once(reference, official_file, tmp_path):
    """A local Hugging Face cache laid out as hf_hub_download leaves it; no network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--csgaobb--MetaUAS"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(official_file, snapshot / "metauas-512.ckpt")
    dirs = {"HF_HUB_CACHE": tmp_path / "hf", "METAUAS_CACHE": tmp_path / "cache"}
    code = (
        "import metauas, numpy as np; m = metauas.load('hf:csgaobb/MetaUAS/metauas-512.ckpt', device='cpu', "
        "size=64); r = m.segment(np.zeros((64, 64, 3), np.uint8), prompt=np.full((64, 64, 3), 9, np.uint8)); "
        "print(m.size, m.meta['official'], r.map.shape)"
    )
    first = _hub_run(code, dirs)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["64", "True", "(64,", "64)"]
    [converted] = (tmp_path / "cache" / "converted").glob("*-metauas-512.pt")
    model, meta = load_model(converted)
    assert meta["size"] == 512 and meta["source"] == "hf:csgaobb/MetaUAS/metauas-512.ckpt"
    assert _max_diff(reference, model, 256) < 1e-4
    stamp = converted.stat().st_mtime_ns
    assert _hub_run(code, dirs).returncode == 0 and converted.stat().st_mtime_ns == stamp  # converted once

    image = tmp_path / "x.png"
    image.write_bytes(_png())
    missing = _hub_run(
        "from metauas.cli import main; import sys; sys.exit(main(['predict', '--checkpoint', "
        f"'hf:csgaobb/MetaUAS/metauas-256.ckpt', '--prompt', '{image}', '--query', '{image}', "
        f"'--out', '{tmp_path / 'o'}']))",
        dirs,
    )
    assert missing.returncode == 2
    line = missing.stderr.strip()
    assert "\n" not in line and "cannot get hf:csgaobb/MetaUAS/metauas-256.ckpt" in line
    assert "https://huggingface.co/csgaobb/MetaUAS/resolve/main/metauas-256.ckpt by hand" in line


def _png() -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()
