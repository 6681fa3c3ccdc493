"""Typed dataclass configs that round-trip through JSON, and the CLI's view of them.

Every run writes its config as JSON (index.json, config.json, metrics.json) and every
command can read one back (`--config FILE`), with the flags a user typed on top. So a
config is written once, as a dataclass: a field the command line offers is declared with
`option(default, help, panel)` (its default, help text and help panel in one place;
`options.py` makes the command's options from them), the CLI builds the config from a
file and the typed flags (`from_cli`), and `from_dict` rebuilds nested dataclasses,
tuples and paths from plain JSON, refusing keys it does not know (a typo must not be
silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metauas.errors import UserError


class Panel:
    """The help panels options are grouped in (`metauas train -h`)."""

    DATA, MODEL, AUGMENT, OPTIMISATION = "Data", "Model", "Augmentation", "Optimisation"
    VALIDATION, SYNTHESIS, PROMPTS, METRICS = "Validation", "Synthesis", "Prompts", "Metrics"
    OUTPUT, DEVICE, CONFIG = "Output", "Device and processes", "Config"
    # the order help shows them in: what goes in, what is done to it, what comes out
    ORDER = (DATA, SYNTHESIS, MODEL, PROMPTS, AUGMENT, OPTIMISATION, VALIDATION, METRICS, OUTPUT, DEVICE, CONFIG)


Required = Literal["", "unless-config", "always"]  # Flag.required


@dataclass(frozen=True)
class Flag:
    """How the command line offers a config field (`option` declares one).

    `names`: the option's names (default `--field-name`; "--x/--no-x" for an on/off
    pair). `parse(value, name)` turns what was typed into the field's value (comma
    lists, weights) and `text(default)` the field's default into what would be typed
    (shown in help, and parsed like typed text); `kind` is the type the command line
    takes when it is not the field's. `required`: the option has no default there,
    "unless-config" (a --config file may give it) or "always"; `derived`: left out,
    the command derives it from other options (none typed: the config's default)."""

    help: str
    panel: str
    names: tuple[str, ...] = ()
    parse: Callable[[Any, str], Any] | None = None
    text: Callable[[Any], str] | None = None
    kind: Any = None
    required: Required = ""
    derived: bool = False


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    panel: str = Panel.OUTPUT,
    *,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **flag: Any,
) -> Any:
    """A dataclass field the command line offers, with its default and help (see `Flag`)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"flag": Flag(help, panel, **flag)})


def flag_of(f: dataclasses.Field) -> Flag | None:
    """The field's `Flag`, or None when the command line does not offer it."""
    return f.metadata.get("flag")


def parse_ints(text: str, name: str, allow_none: bool = False, positive: bool = False) -> tuple[int, ...]:
    """A comma-separated option of whole numbers, "1,3,5" -> (1, 3, 5); with `allow_none`,
    "none" (or nothing) is the empty tuple, else at least one value is needed; with
    `positive`, each must be at least 1."""
    text = text.replace(" ", "")
    if allow_none and text in ("", "none"):
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise UserError(f"{name} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{name} needs at least one value")
    if positive and min(values) < 1:
        raise UserError(f"{name} takes positive whole numbers, got {text!r}")
    return values


def ints_text(values: tuple[int, ...]) -> str:
    """(1, 3, 5) -> "1, 3, 5", as `parse_ints` reads it ("none" for no value)."""
    return ", ".join(map(str, values)) if values else "none"


def int_list(text: str, name: str) -> tuple[int, ...]:
    """`parse_ints`: at least one whole number."""
    return parse_ints(text, name)


def int_list_or_none(text: str, name: str) -> tuple[int, ...]:
    """`parse_ints` where "none" (or nothing) is no value."""
    return parse_ints(text, name, allow_none=True)


def one_or_many(values: list[str], name: str) -> str | tuple[str, ...] | None:
    """A repeatable option's values as a field holds them: None, one value, or a tuple."""
    return (values[0] if len(values) == 1 else tuple(values)) if values else None


def comma_list(values: list[str], name: str) -> tuple[str, ...]:
    """A repeatable option whose values may also be comma-separated: ["a,b", "c"] -> ("a", "b", "c")."""
    return tuple(v for item in values for v in item.split(",") if v)


def as_tuple(values: list[Any], name: str) -> tuple[Any, ...]:
    """A repeatable option's values as a tuple field holds them."""
    return tuple(values)


def to_dict(cfg: Any) -> dict:
    """JSON-ready dict of a dataclass: paths as strings, tuples as lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _convert(kind: Any, value: Any, where: str, legacy: bool = True) -> Any:
    """`value` (plain JSON) as the annotated type `kind` (dataclass, tuple, Path, Optional)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        kind, origin = options[0], typing.get_origin(options[0])
        if len(options) > 1 and not isinstance(value, (dict, list)):
            return value  # e.g. str | tuple[str, ...] given as a string
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_dict(kind, value, where, legacy)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if kind is Path and isinstance(value, str):
        return Path(value)
    return value


def from_dict(cls: type, data: Any, where: str = "config", legacy: bool = True) -> Any:
    """Rebuild `cls` from `to_dict`'s output. Unknown keys, and data that is not an
    object where a config is expected, are a UserError naming `where`.

    A class may name `LEGACY` values for fields it gained later whose new default
    behaves differently: stored JSON written before the field existed lacks the key and
    gets the legacy value, so old checkpoints and runs keep their behaviour. `legacy`
    is False when `data` comes from command-line options, which take today's defaults."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    if legacy:
        data = {**getattr(cls, "LEGACY", {}), **data}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__} (known: {', '.join(sorted(names))})"
        )
    for k, v in data.items():
        _finite(v, f"{where}.{k}")
    try:
        return cls(**{k: _convert(hints[k], v, f"{where}.{k}", legacy) for k, v in data.items()})
    except TypeError as err:  # a required field missing, or a value of the wrong kind
        raise UserError(f"{where}: {err}") from None


def _finite(value: Any, where: str) -> None:
    """Every number of a config is finite: a NaN or infinite learning rate, weight or
    threshold (typed as `--lr nan`, or in a config file) would be decided on silently."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {value} is not a finite number")
    if isinstance(value, (list, tuple)):
        for item in value:
            _finite(item, where)


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nested beyond reason
        raise UserError(f"cannot read {what} {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a JSON object")
    return data


def from_cli(
    cls: type, given: dict[str, Any], typed: set[str], file: Path | None = None, section: str | None = None
) -> Any:
    """The config a command runs with: `file` (a config JSON, or the `section` of one
    such as index.json's "config") when given, with the options the user typed on top;
    without a file, every option's value (their defaults are the dataclass's).

    `given` maps dotted field names to option values; `typed` names those typed."""
    if file is None:
        return from_dict(
            cls, _nest({k: v for k, v in given.items() if v is not None or k in typed}), "options", legacy=False
        )
    data = read_json(file, "--config")
    if section is not None and isinstance(data.get(section), dict):
        data = data[section]
    return from_dict(cls, _nest({k: given[k] for k in typed}, into=data), str(file))


def _nest(flat: dict[str, Any], into: dict | None = None) -> dict:
    """{"model.fusion": v} -> {"model": {"fusion": v}}, laid over a copy of `into`."""
    out = json.loads(json.dumps(into)) if into else {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    return out
