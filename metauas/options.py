"""What every long-running command offers the same way: `--config`, `-q/-v`,
`--progress/--no-progress`, and the bridge from typed options to a dataclass config.

A command lists its options with dataclass defaults (`configs.default`), then calls
`build_config`: the config file (if any) with the options the user typed on top, or all
option values when there is no file. "Typed" is what click saw on the command line (or
in the environment), so an option left at its default never overrides a config file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import typer

from metauas.configs import from_cli
from metauas.errors import UserError
from metauas.recipes import RECIPES

CONFIG_HELP = (
    "A JSON config to start from: a run's config.json (train), index.json's config "
    "(generate) or metrics.json's config (evaluate); options you type override it."
)


def config_option() -> Any:
    return typer.Option(None, "--config", help=CONFIG_HELP, exists=True, dir_okay=False)


def quiet_option() -> Any:
    return typer.Option(False, "-q", "--quiet", help="Only warnings and errors; no progress bar.")


def verbose_option() -> Any:
    return typer.Option(False, "-v", "--verbose", help="Debug messages too.")


def progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr.")


def setup_output(quiet: bool, verbose: bool, progress: bool) -> bool:
    """Configure logging for -q/-v and return whether to show progress bars."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    return progress and not quiet


def typed(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user gave (command line or environment)."""
    sources = ("COMMANDLINE", "ENVIRONMENT")  # by name: newer typer vendors its own click
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", None) in sources}


RecipeName = Literal[tuple(RECIPES)]  # the --recipe choices, for typer


def recipe_option() -> Any:
    return typer.Option(
        None,
        "--recipe",
        help=f"Start from a published configuration: {' | '.join(RECIPES)} "
        "(paper, paper-512: docs/reproduce.md; cpu, the reference recipe for an hour on 2 CPU "
        "cores: docs/quality.md). Options you type override it.",
    )


def build_config(
    cls: type,
    ctx: typer.Context,
    values: dict[str, Any],
    fields: dict[str, str],
    config: Path | None,
    section: str | None = None,
    also_typed: set[str] = frozenset(),
    recipe: dict[str, Any] | None = None,
) -> Any:
    """The command's config: `values` are the option values by parameter name, `fields`
    maps parameter names to dotted config fields (parameters not in it are not config);
    `also_typed` names parameters a command derived from typed ones (they override too).
    `recipe` (dotted field -> value) lies over the defaults and the config file, under
    the typed options."""
    given = {fields[name]: value for name, value in values.items() if name in fields}
    names = typed(ctx) | set(also_typed) | ({"progress"} if "quiet" in typed(ctx) else set())
    chosen = {fields[name] for name in names if name in fields}
    for dotted, value in (recipe or {}).items():
        if dotted not in chosen:
            given[dotted] = value
            chosen.add(dotted)
    return from_cli(cls, given, chosen, config, section)


def parse_ints(text: str, option: str, allow_none: bool = False, positive: bool = False) -> tuple[int, ...]:
    """A comma-separated option of whole numbers, "1,3,5" -> (1, 3, 5); with `allow_none`,
    "none" (or nothing) is the empty tuple, else at least one value is needed; with
    `positive`, each must be at least 1."""
    text = text.replace(" ", "")
    if allow_none and text in ("", "none"):
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise UserError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{option} needs at least one value")
    if positive and min(values) < 1:
        raise UserError(f"{option} takes positive whole numbers, got {text!r}")
    return values
