"""`train --val DIR` with a folder of real defects (MVTec layout): the run's learning curve
on transfer is the numbers `evaluate --method model` gives its checkpoint, and best.pt
follows them."""

from __future__ import annotations

import json

import pytest
from make_data import tiny_model_config

from metauas.cli import main
from metauas.evaluation.config import EvalConfig
from metauas.evaluation.evaluate import evaluate
from metauas.model.checkpoint import load_model
from metauas.trainer.config import TrainConfig
from metauas.trainer.train import train


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_real_folder_validation_is_evaluates_protocol_and_picks_best(shard_dir, mvtec_root, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(
        train=str(shard_dir / "train"),
        val=(str(shard_dir / "val"), str(mvtec_root)),
        out=str(out),
        model=tiny_model_config(),
        size=64,
        batch_size=4,
        steps=4,
        workers=0,
        lr=3e-3,
        val_every=2,
        save_every=2,
        log_every=1,
        progress=False,
        warmup_steps=1,
        val_size=64,
        val_seeds=(1, 2),
    )
    train(cfg)
    real = [r for r in _rows(out) if "real_p_ap" in r]
    assert [r["step"] for r in real] == [0, 2, 4]
    assert all("val_p_ap" in r and "real_tile_p_ap" in r and "real_plate_p_ap" in r for r in real)

    result = evaluate(
        EvalConfig(
            data=mvtec_root,
            out=tmp_path / "eval",
            checkpoint=out / "last.pt",
            method="model",
            seeds=(1, 2),
            size=64,
            overlays=0,
            fit_normals=0,
            progress=False,
        )
    )
    mean = next(r for r in result["rows"] if r["class"] == "mean")["metrics"]
    for metric, key in (("I-AUROC", "i_auroc"), ("P-AUROC", "p_auroc"), ("P-AP", "p_ap"), ("P-AUPRO", "p_aupro")):
        assert real[-1][f"real_{key}"] == pytest.approx(mean[metric], abs=2e-3), metric

    best = max(real, key=lambda r: r["real_p_ap"])
    best = next(r for r in real if r["real_p_ap"] == best["real_p_ap"])  # the first of equals, as in training
    assert load_model(out / "best.pt")[1]["step"] == best["step"]


def test_val_options_on_the_command_line(shard_dir, mvtec_root, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--train",
            str(shard_dir / "train"),
            "--val",
            str(mvtec_root / "tile"),
            "--out",
            str(run),
            "--steps",
            "1",
            "--size",
            "32",
            "--batch-size",
            "2",
            "--encoder-weights",
            "none",
            "--workers",
            "0",
            "--val-size",
            "32",
            "--val-seeds",
            "3,4",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["val"], cfg["val_size"], cfg["val_seeds"]) == (str(mvtec_root / "tile"), 32, [3, 4])
    assert [r["step"] for r in _rows(run) if "real_p_ap" in r] == [0, 1]

    code = main(
        [
            "train",
            "--train",
            str(shard_dir / "train"),
            "--out",
            str(tmp_path / "bad"),
            "--steps",
            "1",
            "--val-seeds",
            "one",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "--val-seeds takes comma-separated whole numbers" in err and "Traceback" not in err
