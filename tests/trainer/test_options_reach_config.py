"""Options a user types reach the run's config.json (the record a rerun and the paper
tables are made from): --epochs, --dice and --layout official."""

from __future__ import annotations

import json

from metauas.cli import main
from metauas.model.checkpoint import read_checkpoint


def test_epochs_dice_and_layout_reach_config_json(shard_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--train",
            str(shard_dir / "train"),
            "--out",
            str(run),
            "--epochs",
            "0.25",
            "--dice",
            "0.5",
            "--layout",
            "official",
            "--size",
            "32",
            "--batch-size",
            "4",
            "--encoder-weights",
            "none",
            "--workers",
            "0",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == 0.25 and cfg["steps"] is None and cfg["dice_weight"] == 0.5
    assert cfg["model"]["encoder"]["layout"] == "official"
    # 4 shards x 8 pairs, a quarter pass, batches of 4: 2 steps (index-free shards: counted from tar headers)
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == 2
    assert read_checkpoint(run / "last.pt")["meta"]["config"]["encoder"]["layout"] == "official"


def test_the_cpu_recipe_reaches_both_configs(shard_dir, tmp_path, capsys):
    from metauas.recipes import recipe

    data = tmp_path / "pairs"
    assert (
        main(
            [
                "generate",
                "--recipe",
                "cpu",
                "--num-pairs",
                "4",
                "--out",
                str(data),
                "--size",
                "64",
                "--workers",
                "1",
                "-q",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert json.loads((data / "index.json").read_text())["config"]["source"] == "builtin"
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--recipe",
            "cpu",
            "--train",
            str(shard_dir / "train"),
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
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    settings = recipe("cpu", "train")
    assert (cfg["lr"], cfg["warmup_steps"], cfg["val_every"], cfg["model"]["discrepancy_stages"]) == (
        settings["lr"],
        settings["warmup_steps"],
        settings["val_every"],
        settings["model.discrepancy_stages"],
    )
    assert (cfg["steps"], cfg["size"]) == (1, 32)  # typed options win
