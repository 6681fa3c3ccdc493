"""What every command offers the same way, and the options a config-backed command
makes from its config.

Every command runs as a `Command`: `-q/-v` (our own log lines; third-party libraries stay
at warnings), help whose flags show no value placeholder, options grouped in panels.

A config-backed command (generate, train, evaluate, predict, demo) declares its options
once, on its config's fields (`configs.option`: default, help, panel); `config_command`
makes the typer options from them (names, types, defaults, help) beside `--config`,
`--recipe` and `-q/-v`, and builds the config the command runs with: the config file
(if any) with the options the user typed on top, or all option values when there is no
file. "Typed" is what click saw on the command line (or in the environment), so an
option left at its default never overrides a config file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import typer
import typer.rich_utils
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from metauas.configs import Flag, Panel, flag_of, from_cli
from metauas.errors import UserError
from metauas.recipes import RECIPES, recipe

CONFIG_HELP = (
    "A JSON config to start from: a run's config.json (train), index.json's config "
    "(generate) or metrics.json's config (evaluate); options you type override it."
)


class _HelpTable(Table):
    """The table of an options panel in our help. typer gives a switch's off name
    (`--no-learn-temperature`) a column of its own, and rich shrinks every column of a
    table too wide for the terminal: on an 80-column terminal `train -h` printed
    `--scale-similari…` and `docs/ablatio…`, names a user cannot type. Here the off name
    goes under the on name, in one column; names never wrap or shorten, and the value
    types and the help text give way (folded: a long word breaks, never ends in "…").

    typer's row, from the end: long names, short names, off names (long, short), type,
    help; a required marker may come first."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        cells = list(renderables)
        for text in getattr(cells[-1], "renderables", [cells[-1]]):  # typer's help: Columns of Texts
            if isinstance(text, Text):
                text.overflow = "fold"  # a word wider than the column breaks, never ends in "…"
        if len(cells) >= 6:
            for on, off in ((-6, -4), (-5, -3)):
                if isinstance(cells[on], Text) and isinstance(cells[off], Text) and cells[off].plain:
                    cells[on] = Text("\n").join([cells[on], cells[off]]) if cells[on].plain else cells[off]
                    cells[off] = Text("")
        super().add_row(*cells, **kwargs)
        for column in self.columns[:-2]:
            column.no_wrap = True


@contextlib.contextmanager
def _help_layout() -> Iterator[None]:
    """typer draws its panels with the `Table` of its `rich_utils` module and offers no
    setting for column widths: while help is drawn, that name is `_HelpTable`. If a
    later typer draws otherwise, help keeps typer's own layout (the help test, at 80
    columns, says so)."""
    drawing = typer.rich_utils
    original = getattr(drawing, "Table", None)
    if original is not Table:  # a typer that draws otherwise: leave it be
        yield
        return
    setattr(drawing, "Table", _HelpTable)
    try:
        yield
    finally:
        setattr(drawing, "Table", original)


def _plain_placeholders(params: list[Any]) -> list[Any]:
    """Our help conventions on typer's parameters: a flag (an on/off option, `-h`
    included) shows no value placeholder (typer writes `<bool>` for each), and values
    are named <int>, <path>, <text>, never by Python types (`<list[Path]>`)."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument":  # its metavar is its name: only the type column changes
            shown = _metavar(param.type_descriptor.annotation)
            param.display_type_rich = lambda ctx, shown=shown: shown  # typer has no setting for it
        elif param.metavar is None and hasattr(param, "type_descriptor"):
            param.metavar = _metavar(param.type_descriptor.annotation)
    return params


class _HelpConventions:
    """Our help conventions on a typer command or group (`_plain_placeholders`,
    `_help_layout`); mixed in before typer's class."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_placeholders(super().get_params(ctx))  # type: ignore[misc]  # a mixin: typer's class, next in line, has it

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _help_layout():
            super().format_help(ctx, formatter)  # type: ignore[misc]  # as above


class Command(_HelpConventions, TyperCommand):
    """Every command of ours (`add_command`)."""


class Group(_HelpConventions, TyperGroup):
    """`metauas` and `metauas bench`."""


def add_command(app: typer.Typer, name: str, function: Callable[..., Any]) -> None:
    """Register `function` as command `name` of `app`, as a `Command` that takes -q/-v."""
    app.command(name, cls=Command)(with_output_options(function))


def with_output_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with -q/-v added (they set up logging, then `function` runs), unless
    it takes them itself (a config-backed command: -q also turns its progress bar off)."""
    signature = inspect.signature(function)
    if "quiet" in signature.parameters:
        return function

    names = _option_names(signature)

    @functools.wraps(function)
    def command(*args: Any, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
        setup_output(quiet, verbose)
        try:
            return function(*args, **kwargs)
        except UserError as err:  # a setting named as the library calls it: named as the option here
            raise err.named(names) from None

    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("quiet", keyword, default=quiet_option(), annotation=bool),
        inspect.Parameter("verbose", keyword, default=verbose_option(), annotation=bool),
    ]
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]  # typer reads the options from the signature
    return command


def _option_names(signature: inspect.Signature) -> dict[str, str]:
    """Parameter name -> its option's long name (--checkpoint), from typer's options."""
    names = {}
    for name, param in signature.parameters.items():
        decls = getattr(param.default, "param_decls", None) or ()
        long = [d.split("/")[0] for d in decls if d.startswith("--")]
        if long:
            names[name] = long[0]
    return names


def config_option() -> Any:
    return typer.Option(None, "--config", help=CONFIG_HELP, exists=True, dir_okay=False, rich_help_panel=Panel.CONFIG)


def quiet_option() -> Any:
    return typer.Option(
        False, "-q", "--quiet", help="Only warnings and errors; no progress bar.", rich_help_panel=Panel.OUTPUT
    )


def verbose_option() -> Any:
    return typer.Option(
        False,
        "-v",
        "--verbose",
        help="Debug messages of metauas too (other libraries stay quiet).",
        rich_help_panel=Panel.OUTPUT,
    )


def progress_option() -> Any:
    return typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar on stderr.", rich_help_panel=Panel.OUTPUT
    )


def setup_output(quiet: bool, verbose: bool, progress: bool = True) -> bool:
    """Configure logging for -q/-v and return whether to show progress bars. Other
    libraries' loggers stay at warnings: -v is for our own debug lines, not PIL's."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("metauas").setLevel(level)
    return progress and not quiet


def typed(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user gave (command line or environment)."""
    sources = ("COMMANDLINE", "ENVIRONMENT")  # by name: newer typer vendors its own click
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", None) in sources}


RecipeName = Literal[tuple(RECIPES)]  # type: ignore[valid-type]  # the --recipe choices, built from the recipes' names


def recipe_option() -> Any:
    return typer.Option(
        None,
        "--recipe",
        help=f"Start from a published configuration: {' | '.join(RECIPES)} "
        "(paper, paper-512: docs/reproduce.md; cpu, the reference recipe for an hour on 2 CPU "
        "cores: docs/quality.md). Options you type override it.",
        rich_help_panel=Panel.CONFIG,
    )


# -- options made from a config -----------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One option of a config-backed command: the config field it sets (its path from
    the config down), its `Flag`, the field's type and default."""

    path: tuple[str, ...]
    flag: Flag
    kind: Any
    default: Any

    @property
    def name(self) -> str:
        """The option's (first) name, e.g. --warmup."""
        return self.flag.names[0].split("/")[0] if self.flag.names else "--" + self.path[-1].replace("_", "-")

    @property
    def param(self) -> str:
        """The command function's parameter: the name without dashes, e.g. warmup."""
        return self.name.lstrip("-").replace("-", "_")

    @property
    def dotted(self) -> str:
        """The field as recipes and `configs.from_cli` name it, e.g. model.encoder.name."""
        return ".".join(self.path)


def bound_options(cls: type, path: tuple[str, ...] = ()) -> Iterator[Bound]:
    """Every field of `cls` (and of the configs nested in it) that has a `Flag`, in order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, kind = flag_of(f), hints[f.name]
        if flag is not None:
            yield Bound((*path, f.name), flag, kind, _default(f))
        elif dataclasses.is_dataclass(kind):
            yield from bound_options(kind, (*path, f.name))  # type: ignore[arg-type]  # a nested config class


def _default(f: dataclasses.Field) -> Any:
    """A field's default (None for a required field)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return None if f.default_factory is dataclasses.MISSING else f.default_factory()


def _choices(kind: Any) -> tuple[str, ...] | None:
    """The names of a Literal type (or of an optional one), else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


SHORT_CHOICES = 32  # characters of a|b|c shown as an option's value in help


def _metavar(kind: Any) -> str | None:
    """What help shows as an option's value: <int>, <path>, <a|b|c> (a list: its item's);
    None for a flag (see `Command`)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    choices = _choices(kind)
    if kind is bool:
        return None
    if choices:  # a long list is named in the help text instead: help cannot break it
        return "<" + "|".join(choices) + ">" if len("|".join(choices)) <= SHORT_CHOICES else "<choice>"
    return {int: "<int>", float: "<float>", Path: "<path>"}.get(kind, "<text>")


def _parameter(bound: Bound, with_config: bool) -> inspect.Parameter:
    """The typer parameter of one bound option."""
    flag = bound.flag
    kind = flag.kind or bound.kind
    default: Any
    if flag.required:
        default = ... if flag.required == "always" or not with_config else None
    elif flag.derived:
        default = None
    elif typing.get_origin(kind) is list:
        default = None  # a repeatable option: none given is the field's default
    else:
        default = flag.text(bound.default) if flag.text else bound.default
    if default is None or default is ...:
        kind = Optional[kind]
    info = typer.Option(
        default,
        *(flag.names or (bound.name,)),
        help=flag.help,
        rich_help_panel=flag.panel,
        metavar=_metavar(kind),
        show_default=default is not None and default is not ...,
    )
    return inspect.Parameter(bound.param, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind)


def field_option(cls: type, name: str) -> Any:
    """The typer option of field `name` of `cls` as its config-backed command offers it
    (names, default, help, panel), for another command that takes the same setting."""
    bound = next((b for b in bound_options(cls) if b.path == (name,)), None)
    if bound is None:
        raise KeyError(f"{cls.__name__}.{name} is not an option")
    return _parameter(bound, with_config=False).default


# a command's hook: adjust option values (by parameter name) given the typed names and the
# --config file; returns the parameters it derived from typed ones (they override too)
Prepare = Callable[[dict[str, Any], set[str], Optional[Path]], set[str]]


@dataclass(frozen=True)
class ConfigCommand:
    """How a command's config is made from its options.

    `section`: where the config sits in a --config file ("config" of index.json and
    metrics.json); `recipes`: the command's name in the recipes (None: no --recipe);
    `config_file`: whether it takes --config; `prepare`: the command's own rules (see
    `Prepare`)."""

    cls: type
    section: str | None = None
    recipes: str | None = None
    config_file: bool = True
    prepare: Prepare | None = None
    bounds: tuple[Bound, ...] = field(init=False)

    def __post_init__(self) -> None:
        bounds = tuple(bound_options(self.cls))
        params = [b.param for b in bounds]
        assert len(set(params)) == len(params), f"{self.cls.__name__}: two options share a name"
        object.__setattr__(self, "bounds", bounds)  # frozen: computed once from the class

    def parameters(self) -> list[inspect.Parameter]:
        """The command's typer parameters: the config's, --config and --recipe, -q/-v,
        in the order of their help panels (`Panel.ORDER`)."""
        own: list[tuple[str, Any, Any]] = [("config", config_option(), Optional[Path])] if self.config_file else []
        own += [("recipe", recipe_option(), Optional[RecipeName])] if self.recipes else []
        own += [("quiet", quiet_option(), bool), ("verbose", verbose_option(), bool)]
        keyword = inspect.Parameter.KEYWORD_ONLY
        made = [_parameter(b, self.config_file) for b in self.bounds]
        made += [inspect.Parameter(n, keyword, default=d, annotation=a) for n, d, a in own]
        return sorted(made, key=lambda p: Panel.ORDER.index(p.default.rich_help_panel))

    def build(self, ctx: typer.Context, values: dict[str, Any]) -> Any:
        """The config: option values (by parameter name) over a --config file and a recipe."""
        config, recipe_name = values.pop("config", None), values.pop("recipe", None)
        quiet = values.pop("quiet")
        setup_output(quiet, values.pop("verbose"))
        names = typed(ctx)
        derived = {"progress"} if "quiet" in names and "progress" in values else set()
        if "progress" in values:
            values["progress"] = values["progress"] and not quiet
        self._require(values, config)
        if self.prepare is not None:
            derived |= self.prepare(values, names, config)
        given, chosen = {}, set()
        for b in self.bounds:
            value = values[b.param]
            given[b.dotted] = b.flag.parse(value, b.name) if b.flag.parse and value is not None else value
            if b.param in names or b.param in derived:
                chosen.add(b.dotted)
        for dotted, value in recipe(recipe_name, self.recipes or "").items():
            if dotted not in chosen:
                given[dotted] = value
                chosen.add(dotted)
        return from_cli(self.cls, given, chosen, config, self.section)

    def option_names(self) -> dict[str, str]:
        """What a library error may call a setting -> the option's name: the field's dotted
        path (model.topk), its own name where no other option's field shares it (topk),
        and the command's parameter (align_topk), all -> --align-topk."""
        leaves = [b.path[-1] for b in self.bounds]
        names = {b.path[-1]: b.name for b in self.bounds if leaves.count(b.path[-1]) == 1}
        own = {"config": "--config"} if self.config_file else {}
        own |= {"recipe": "--recipe"} if self.recipes else {}
        return own | names | {b.param: b.name for b in self.bounds} | {b.dotted: b.name for b in self.bounds}

    def _require(self, values: dict[str, Any], config: Path | None) -> None:
        """Options with no default must be given (some may come from --config instead)."""
        missing = [b for b in self.bounds if b.flag.required and values[b.param] is None]
        if not missing:
            return
        if config is None:
            raise UserError(f"give {' and '.join(b.name for b in missing)} (or --config FILE naming them)")
        always = [b.name for b in missing if b.flag.required == "always"]
        if always:
            raise UserError(f"give {' and '.join(always)} (with --config too)")


def config_command(spec: ConfigCommand) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorate `run(cfg)` into the typer command whose options `spec` makes from its
    config; the command's help is `run`'s docstring."""

    def decorate(run: Callable[[Any], Any]) -> Callable[..., Any]:
        def command(ctx: typer.Context, **values: Any) -> Any:
            try:
                return run(spec.build(ctx, values))
            except UserError as err:  # a setting named as the library calls it: named as the option here
                raise err.named(spec.option_names()) from None

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        command.__signature__ = inspect.Signature([context, *spec.parameters()])  # type: ignore[attr-defined]  # typer reads the options from the signature
        command.__annotations__ = {}  # the signature's annotations are the real ones
        command.__doc__, command.__name__ = run.__doc__, run.__name__
        command.spec = spec  # type: ignore[attr-defined]  # for tests: the options the command offers
        return command

    return decorate
