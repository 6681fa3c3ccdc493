"""Issue 6 training side: DictAS lookup losses on change masks, their logging, CLI options."""

import json

import pytest
import torch
from make_data import tiny_model_config

from metauas.errors import UserError
from metauas.model.network import MetaUAS
from metauas.trainer.augment import AugmentConfig
from metauas.trainer.config import TrainConfig
from metauas.trainer.losses import lookup_losses, stage_masks
from metauas.trainer.train import train


def _masks(*changed_columns):
    """B x 1 x 8 x 8 masks, pair b changed in columns changed_columns[b]: (start, stop)."""
    masks = torch.zeros(len(changed_columns), 1, 8, 8)
    for b, (start, stop) in enumerate(changed_columns):
        masks[b, 0, :, start:stop] = 1
    return masks


def _features(masks, changed_distance):
    """Query features and aligned ones equal on unchanged 2x2 cells; on changed cells the
    aligned feature is rotated to the given 1 - cos distance from the query's."""
    torch.manual_seed(0)
    b = masks.shape[0]
    query = torch.randn(b, 2, 4, 4)
    angle = torch.acos(torch.tensor(1.0 - changed_distance))
    rotate = torch.stack(
        [torch.stack([torch.cos(angle), -torch.sin(angle)]), torch.stack([torch.sin(angle), torch.cos(angle)])]
    )
    turned = torch.einsum("ij,bjhw->bihw", rotate, query)
    changed = torch.nn.functional.adaptive_avg_pool2d(masks, (4, 4)) > 0
    return query, torch.where(changed, turned, query)


def test_stage_masks_split_unchanged_changed_and_ignore_mixed_cells():
    unchanged, changed = stage_masks(_masks((3, 8)), (4, 4))  # column 3 half-covers cell 1
    assert unchanged[0, 0].tolist() == [True, False, False, False]
    assert changed[0, 0].tolist() == [False, True, True, True]
    unchanged, changed = stage_masks(_masks((5, 8)), (4, 4))  # cell 2: 1 of 2 columns changed
    assert unchanged[0, 0].tolist() == [True, True, False, False]
    assert changed[0, 0].tolist() == [False, False, True, True]
    one_pixel = torch.zeros(1, 1, 8, 8)
    one_pixel[0, 0, 0, 7] = 1
    unchanged, changed = stage_masks(one_pixel, (4, 4))  # a quarter of a cell: in neither set
    assert unchanged[0, 0].tolist() == [True, True, True, False]
    assert not changed.any()


def test_cqc_hinge_is_zero_when_separated_by_the_margin_and_positive_otherwise():
    masks = _masks((4, 8), (0, 8), (8, 8))  # mixed, all changed, none changed
    query, aligned = _features(masks, changed_distance=0.5)
    losses = lookup_losses([(query, aligned)], masks, margin=0.1)
    assert losses["loss_query"].item() == pytest.approx(0, abs=1e-6)  # aligned == query there
    assert losses["loss_cqc"].item() == pytest.approx(0, abs=1e-6)  # 0.5 apart > margin 0.1
    # margin above the separation: hinge = 0 - 0.5 + 0.6, from the one mixed pair only
    assert lookup_losses([(query, aligned)], masks, margin=0.6)["loss_cqc"].item() == pytest.approx(0.1, abs=1e-5)
    query, aligned = _features(masks, changed_distance=0.05)  # not separated enough
    assert lookup_losses([(query, aligned)], masks, margin=0.1)["loss_cqc"].item() == pytest.approx(0.05, abs=1e-5)


def test_l_query_measures_unchanged_distance_and_stages_are_averaged():
    masks = _masks((4, 8))
    query, aligned = _features(masks, changed_distance=0.5)
    far = -query  # 1 - cos = 2 everywhere
    losses = lookup_losses([(query, aligned), (query, far)], masks, margin=0.1)
    assert losses["loss_query"].item() == pytest.approx((0 + 2) / 2)
    assert losses["loss_cqc"].item() == pytest.approx((0 + 0.1) / 2)  # far: gap 2 - 2 + 0.1


def test_lookup_losses_train_the_alignment_projection():
    model = MetaUAS(tiny_model_config(scale_similarity=True, learn_temperature=True))
    prompt = torch.rand(2, 3, 64, 64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, :32, :32] = 1  # a whole cell of the deepest (2x2) stage
    _, pairs = model(prompt, prompt * masks.logical_not() + masks * 0.9, return_aligned=True)
    losses = lookup_losses(pairs, masks, margin=0.1)
    (losses["loss_query"] + losses["loss_cqc"]).backward()
    for module in model.alignments:
        assert module.project.weight.grad.abs().sum() > 0 and module.log_temperature.grad is not None
    assert all(p.grad is None for p in model.decoder.parameters())  # lookups never reach it


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_with_lookup_losses_logs_their_parts(shard_dir, tmp_path):
    prompt_aug = AugmentConfig(prompt_rot90=0.5, prompt_rotate=0.5, prompt_flip=0.5, prompt_dropout=0.5)
    cfg = TrainConfig(
        train=str(shard_dir / "train"),
        out=str(tmp_path / "run"),
        size=64,
        batch_size=4,
        steps=3,
        workers=0,
        log_every=1,
        save_every=100,
        progress=False,
        warmup_steps=1,
        model=tiny_model_config(alignment="topk", fusion="cat+absdiff+cos"),
        lookup_weight=0.5,
        cqc_margin=0.2,
        augment=prompt_aug,
    )
    train(cfg)
    rows = [r for r in _rows(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["loss_lookup"] == pytest.approx(r["loss_query"] + 0.1 * r["loss_cqc"], rel=1e-5)
        assert r["loss"] == pytest.approx(r["loss_seg"] + 0.5 * r["loss_lookup"], rel=1e-5)
        assert r["loss_query"] > 0


def test_lookup_weight_needs_a_lookup_and_cli_checks_new_options(tmp_path, capsys):
    with pytest.raises(UserError, match="alignment other than none"):
        TrainConfig(train="x", out="y", model=tiny_model_config(alignment="none"), lookup_weight=1.0)
    with pytest.raises(UserError, match="`cqc_margin`"):
        TrainConfig(train="x", out="y", cqc_margin=-1.0)
    from metauas.cli import main

    for option, value, message in [
        ("--prompt-flip", "1.5", "--prompt-flip is a probability"),
        ("--alignment", "magic", "'magic' is not one of 'soft', 'hard'"),
        ("--align-topk", "0", "--align-topk must be a positive"),
        ("--fusion", "cat+mul", "'cat+mul' is not one of 'cat', 'add'"),
    ]:
        args = ["train", "--train", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "3", option, value]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "options, scaled",
    [(["--alignment", "sparsemax"], True), ([], False), (["--alignment", "sparsemax", "--no-scale-similarity"], False)],
)
def test_cli_scales_similarity_by_default_for_sparsemax_only(shard_dir, tmp_path, options, scaled):
    from metauas.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--train",
                str(shard_dir / "train"),
                "--out",
                str(run),
                "--steps",
                "1",
                "--size",
                "32",
                "--encoder-weights",
                "none",
                "--workers",
                "0",
                "-q",
                *options,
            ]
        )
        == 0
    )
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["scale_similarity"] is scaled
    assert model["alignment"] == ("sparsemax" if options else "soft")
