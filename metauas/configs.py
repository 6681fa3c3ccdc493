"""Typed dataclass configs that round-trip through JSON, and the CLI's view of them.

Every run writes its config as JSON (index.json, config.json, metrics.json) and every
command can read one back (`--config FILE`), with the flags a user typed on top. So a
config is written once, as a dataclass: the CLI takes its option defaults from the
dataclass (`default`), builds the config from a file and the typed flags (`from_cli`),
and `from_dict` rebuilds nested dataclasses, tuples and paths from plain JSON, refusing
keys it does not know (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from metauas.errors import UserError


def _field(cls: type, name: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return fields[name]


def default(cls: type, dotted: str) -> Any:
    """The default of a (nested) field, e.g. default(TrainConfig, "model.encoder.name")."""
    head, _, rest = dotted.partition(".")
    f = _field(cls, head)
    value = (
        f.default
        if f.default is not dataclasses.MISSING
        else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    )
    for name in rest.split(".") if rest else ():
        value = getattr(value, name)
    return value


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
    if dataclasses.is_dataclass(kind):
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
