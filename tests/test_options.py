"""Options made from the typed configs (`configs.option`, `options.config_command`): one
place per default, help that reads well, -q/-v on every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from metauas.changegen.config import GenerateConfig
from metauas.cli import app, main
from metauas.demo import DemoConfig
from metauas.evaluation.config import EvalConfig
from metauas.inference.config import PredictConfig
from metauas.trainer.config import TrainConfig

# each config-backed command, the options it cannot do without, and the config they make
REQUIRED = {
    "train": (["--train", "x", "--out", "y"], TrainConfig(train="x", out="y")),
    "generate": (["--out", "o", "--num-pairs", "4"], GenerateConfig(out=Path("o"), num_pairs=4)),
    "evaluate": (["--data", "d", "--out", "o"], EvalConfig(data=Path("d"), out=Path("o"))),
    "predict": (["--query", "q", "--out", "o"], PredictConfig(query=Path("q"), out=Path("o"))),
    "demo": ([], DemoConfig()),
}


def _commands(group: typer.Typer = app, prefix: tuple[str, ...] = ()):
    """(command path, its function) of every command, sub-apps included."""
    for info in group.registered_commands:
        yield (*prefix, info.name), info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*prefix, sub.name))


def _spec_and_context(name: str, args: list[str]):
    function = dict(_commands())[(name,)]
    click_command = typer.main.get_command(app).commands[name]
    return function.spec, click_command.make_context(name, list(args))


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_options_left_untyped_give_the_configs_defaults(name):
    args, expected = REQUIRED[name]
    spec, ctx = _spec_and_context(name, args)
    assert spec.build(ctx, dict(ctx.params)) == expected


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_default_shown_as_text_reads_back_as_the_default(name):
    spec, _ = _spec_and_context(name, REQUIRED[name][0])
    for bound in spec.bounds:
        if bound.flag.text is not None:
            assert bound.flag.parse(bound.flag.text(bound.default), bound.name) == bound.default, bound.name


def test_typed_options_reach_nested_fields_and_override_a_recipe():
    spec, ctx = _spec_and_context(
        "train", ["--train", "x", "--out", "y", "--recipe", "cpu", "--align-topk", "3", "--discrepancy-stages", "none"]
    )
    cfg = spec.build(ctx, dict(ctx.params))
    assert cfg.model.topk == 3 and cfg.model.discrepancy_stages == ()
    assert cfg.lr != TrainConfig(train="x", out="y").lr  # the recipe's, not typed


def _reads_well(text: str) -> None:
    """No Python types, no `<bool>` placeholder, no name or word cut to "…"."""
    assert "<bool>" not in text and "…" not in text and "list[" not in text and "<str>" not in text


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=" ".join)
def test_every_command_takes_q_and_v_and_its_help_reads_well(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a terminal's default width
    assert main([*path, "-q", "-v", "-h"]) == 0
    text = capsys.readouterr().out
    assert "-q" in text and "--verbose" in text
    _reads_well(text)


@pytest.mark.parametrize("path", [(), ("bench",)], ids=["metauas", "bench"])
def test_the_groups_help_reads_well(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*path, "-h"]) == 0
    _reads_well(capsys.readouterr().out)


@pytest.mark.parametrize("columns", ["60", "80"])
def test_a_switchs_off_name_stands_whole_under_its_on_name(columns, capsys, monkeypatch):
    """typer gave the off name a column of its own; on an 80-column terminal rich then
    cut the names (`--scale-similari…`)."""
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["train", "-h"]) == 0
    lines = capsys.readouterr().out.splitlines()
    on = next(i for i, line in enumerate(lines) if "--learn-temperature " in line)
    assert "--no-learn-temperature " in lines[on + 1] and "--no-learn" not in lines[on]


def test_train_help_groups_its_options():
    ctx = typer.main.get_command(app).commands["train"].make_context("train", ["--train", "x", "--out", "y"])
    panels = {getattr(p, "rich_help_panel", None) for p in ctx.command.params}
    assert {"Data", "Model", "Augmentation", "Optimisation", "Validation", "Output", "Device and processes"} <= panels


def test_v_shows_our_debug_lines_and_not_other_libraries(mvtec_root, tmp_path, capsys):
    tile = mvtec_root / "tile"
    args = ["predict", "--method", "lookup", "--size", "64", "--prompt", str(tile / "train/good/000.png")]
    args += ["--query", str(tile / "test/blob"), "--out", str(tmp_path / "p"), "-v", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "DEBUG metauas.predict" in err and "score" in err
    assert not [line for line in err.splitlines() if "metauas" not in line and line.startswith("DEBUG")], err


def test_a_library_error_names_the_field_and_the_command_its_option(tmp_path, capsys):
    from metauas.errors import UserError

    with pytest.raises(UserError, match="`warmup_steps` must not be negative"):
        TrainConfig(train="x", out="y", warmup_steps=-1)
    assert main(["train", "--train", "x", "--out", str(tmp_path / "r"), "--warmup", "-1"]) == 2
    assert "error: --warmup must not be negative" in capsys.readouterr().err
    assert main(["evaluate", "--data", "d", "--out", str(tmp_path / "e"), "--score-topk", "0"]) == 2
    assert "error: --score-topk must be at least 1" in capsys.readouterr().err
