"""Training: it learns, the encoder never moves, resume continues, 2-process gloo DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from make_data import tiny_model_config, write_shards

from metauas.errors import UserError
from metauas.model.checkpoint import load_model, read_checkpoint
from metauas.model.network import MetaUAS
from metauas.trainer.augment import AugmentConfig
from metauas.trainer.config import TrainConfig
from metauas.trainer.train import train

NO_AUGMENT = AugmentConfig(swap=0.0, affine=0.0, jitter=0.0)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _config(shard_dir, out, **overrides):
    fields = dict(
        train=str(shard_dir / "train"),
        val=str(shard_dir / "val"),
        out=str(out),
        model=tiny_model_config(),
        size=64,
        batch_size=4,
        steps=6,
        workers=0,
        val_every=100,
        save_every=3,
        log_every=1,
        progress=False,
        warmup_steps=1,
    )
    return TrainConfig(**{**fields, **overrides})


@pytest.mark.slow
def test_overfits_a_few_pairs_and_leaves_the_encoder_untouched(tmp_path):
    write_shards(tmp_path / "few", shards=1, per_shard=4, seed=5)
    cfg = TrainConfig(
        train=str(tmp_path / "few"),
        val=str(tmp_path / "few"),
        out=str(tmp_path / "run"),
        model=tiny_model_config(),
        size=64,
        batch_size=4,
        steps=100,
        workers=0,
        lr=5e-3,
        min_lr_ratio=0.2,
        warmup_steps=1,
        shuffle_buffer=1,
        augment=NO_AUGMENT,
        log_every=5,
        val_every=100,
        save_every=100,
        progress=False,
    )
    path = train(cfg)
    rows = _rows(tmp_path / "run")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    val = [r for r in rows if "val_p_ap" in r]
    assert val[0]["step"] == 0 and val[-1]["step"] == 100
    assert val[-1]["val_p_ap"] > val[0]["val_p_ap"] + 0.2

    torch.manual_seed(cfg.seed)  # train() builds its model right after this seeding
    initial = MetaUAS(cfg.model).encoder.state_dict()
    trained, meta = load_model(path)
    assert meta["step"] == 100
    for key, value in trained.encoder.state_dict().items():
        assert torch.equal(value, initial[key]), key
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_best_pt_holds_the_weights_of_the_best_validation(shard_dir, tmp_path):
    out = tmp_path / "run"
    train(_config(shard_dir, out, steps=8, val_every=2, lr=3e-3))
    val = [r for r in _rows(out) if "val_p_ap" in r]
    best_row = max(val, key=lambda r: r["val_p_ap"])  # the first of equals wins, as in training
    best = [r for r in val if r["val_p_ap"] == best_row["val_p_ap"]][0]
    model, meta = load_model(out / "best.pt")
    assert meta["step"] == best["step"] and meta["validation"]["val_p_ap"] == best["val_p_ap"]
    state = read_checkpoint(out / "last.pt")["training"]["state"]
    assert (state["best_step"], state["best_val_p_ap"]) == (best["step"], best["val_p_ap"])
    if best["step"] == 8:
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), load_model(out / "last.pt")[0].state_dict().values())
        )


def test_resume_continues_from_the_saved_step(shard_dir, tmp_path):
    run = tmp_path / "run"
    train(_config(shard_dir, run, steps=4, save_every=2))
    first = read_checkpoint(run / "last.pt")
    assert first["meta"]["step"] == 4
    with pytest.raises(UserError, match="pass `resume`"):
        train(_config(shard_dir, run, steps=8))
    train(_config(shard_dir, run, steps=7, resume=True))
    rows = [r for r in _rows(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    again = read_checkpoint(run / "last.pt")
    assert again["meta"]["step"] == 7
    assert again["training"]["optimizer"]["state"]  # Adam moments carried on
    saved, logged = (run / "last.pt").stat().st_mtime_ns, (run / "metrics.jsonl").read_text()
    record = (run / "config.json").read_text()
    train(_config(shard_dir, run, steps=7, resume=True, lr=1e-2))  # complete: nothing to do
    assert (run / "last.pt").stat().st_mtime_ns == saved and (run / "metrics.jsonl").read_text() == logged
    assert (run / "config.json").read_text() == record  # still the record of the weights there


def test_a_resume_with_other_settings_says_which_and_records_them(shard_dir, tmp_path, caplog):
    run = tmp_path / "run"
    train(_config(shard_dir, run, steps=2, save_every=2))
    with caplog.at_level("WARNING", logger="metauas.train"):
        train(_config(shard_dir, run, steps=4, resume=True, lr=1e-2, progress=True))
    said = " ".join(r.getMessage() for r in caplog.records if "config.json" in r.getMessage())
    assert "lr: 0.0001 -> 0.01" in said and "steps: 2 -> 4" in said and "progress" not in said
    record = json.loads((run / "config.json").read_text())
    assert record["lr"] == 1e-2
    other = tiny_model_config(decoder_channels=(8, 8, 8, 8, 8))
    train(_config(shard_dir, run, steps=6, resume=True, model=other))  # the checkpoint's model trains on
    assert json.loads((run / "config.json").read_text())["model"] == record["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_is_what_the_run_saves_and_leaves_the_training_alone(shard_dir, tmp_path):
    """--ema: last.pt, best.pt and model.safetensors hold the average; the raw weights,
    kept in last.pt for --resume, follow the run without --ema exactly (resuming both:
    tests/faults, the SIGKILL test)."""
    from safetensors.torch import load_file

    plain, whole = tmp_path / "plain", tmp_path / "whole"
    train(_config(shard_dir, plain, lr=3e-3))
    train(_config(shard_dir, whole, lr=3e-3, ema=0.9, val_every=6))
    average = read_checkpoint(whole / "last.pt")
    raw = average["training"]["raw_weights"]
    assert _same(raw, read_checkpoint(plain / "last.pt")["model"])  # the average never feeds back
    assert not _same(average["model"], raw)
    best = read_checkpoint(whole / "best.pt")  # validated at steps 0 and 6 only
    if best["meta"]["step"] == 0:  # the untrained model scored best: the average starts as it
        torch.manual_seed(0)  # train() builds its model right after this seeding
        assert _same(best["model"], MetaUAS(tiny_model_config()).state_dict())
    else:
        assert _same(best["model"], average["model"])
    stored = load_file(str(whole / "model.safetensors"))
    assert all(torch.equal(stored[k], average["model"][k]) for k in stored)


def _torchrun(shard_dir, run, steps, *extra):
    """Two gloo ranks; --standalone lets the rendezvous bind a port the OS picks (no
    check-then-bind race with other tests)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "metauas.cli",
        "train",
        "--train",
        str(shard_dir / "train"),
        "--val",
        str(shard_dir / "val"),
        "--out",
        str(run),
        "--encoder-weights",
        "none",
        "--size",
        "64",
        "--batch-size",
        "2",
        "--steps",
        str(steps),
        "--workers",
        "0",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--val-every",
        "1000",
        "--warmup",
        "1",
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.xdist_group("processes")  # starts torchrun: run apart, one at a time (Makefile)
@pytest.mark.slow
def test_two_process_gloo_ddp_trains_and_resumes(shard_dir, tmp_path):
    run = tmp_path / "ddp"
    first = _torchrun(shard_dir, run, 4)
    assert first.returncode == 0, first.stdout
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == 4

    second = _torchrun(shard_dir, run, 7, "--resume")
    assert second.returncode == 0, second.stdout
    final = read_checkpoint(run / "last.pt")
    assert final["meta"]["step"] == 7
    steps = [r["step"] for r in _rows(run) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    pairs_per_step = [r["pairs_per_s"] for r in _rows(run) if "loss" in r]
    assert all(p > 0 for p in pairs_per_step)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "0", "--batch-size must be positive"),
        ("--steps", "-5", "--steps must be positive"),
        ("--size", "16", "--size must be a whole number of pixels from 32 to 4096"),
        ("--size", "100000", "--size must be a whole number of pixels from 32 to 4096"),
        ("--lr", "0", "--lr must be positive"),
        ("--lr", "nan", "lr: nan is not a finite number"),
        ("--workers", "-1", "--workers must not be negative"),
        ("--amp", "fp8", "'fp8' is not one of 'auto', 'bf16'"),
        ("--ema", "1", "--ema is a decay in [0, 1)"),
        ("--sensor-noise", "40", "--sensor-noise is a std in grey levels: give a value in 0..32"),
        ("--consistency", "-1", "--consistency must not be negative"),
        ("--consistency-max", "-0.5", "--consistency-max must not be negative"),
    ],
)
def test_impossible_training_options_are_one_line_errors(tmp_path, capsys, option, value, message):
    from metauas.cli import main

    args = ["train", "--train", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "3", option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_fewer_steps_than_warmup_is_told(shard_dir, tmp_path, capsys):
    from metauas.cli import main

    args = ["train", "--train", str(shard_dir / "train"), "--out", str(tmp_path / "run"), "--steps", "1"]
    args += ["--warmup", "5", "--size", "32", "--batch-size", "2", "--encoder-weights", "none", "--workers", "0"]
    assert main([*args, "--no-progress"]) == 0
    assert "training for 1 steps, fewer than its 5 warmup steps" in capsys.readouterr().err


def test_config_file_repeats_a_run_and_typed_options_override_it(shard_dir, tmp_path, capsys):
    from metauas.cli import main

    first, second = tmp_path / "a", tmp_path / "b"
    assert (
        main(
            [
                "train",
                "--train",
                str(shard_dir / "train"),
                "--out",
                str(first),
                "--steps",
                "1",
                "--size",
                "32",
                "--fusion",
                "cat",
                "--lr",
                "3e-4",
                "--prompt-flip",
                "0.25",
                "--align-topk",
                "5",
                "--batch-size",
                "4",
                "--encoder-weights",
                "none",
                "--workers",
                "0",
                "-q",
            ]
        )
        == 0
    )
    assert main(["train", "--config", str(first / "config.json"), "--out", str(second), "--steps", "2", "-q"]) == 0
    a, b = (json.loads((run / "config.json").read_text()) for run in (first, second))
    assert (a.pop("out"), a.pop("steps"), b.pop("out"), b.pop("steps")) == (str(first), 1, str(second), 2)
    assert a == b and b["model"]["fusion"] == "cat" and b["augment"]["prompt_flip"] == 0.25
    assert read_checkpoint(second / "last.pt")["meta"]["step"] == 2

    typo = json.loads((first / "config.json").read_text()) | {"learning_rate": 0.1}
    (tmp_path / "typo.json").write_text(json.dumps(typo))
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "typo.json"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key(s) learning_rate" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_training_with_the_augmentation_on_the_device(shard_dir, tmp_path):
    """The GPU default (workers only decode, the batch is augmented where it trains) runs
    the same loop; here on the CPU."""
    run = tmp_path / "device-aug"
    train(_config(shard_dir, run, steps=3, augment_on="device", workers=1))
    losses = [r["loss"] for r in _rows(run) if "loss" in r]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)
    assert json.loads((run / "config.json").read_text())["augment_on"] == "device"
