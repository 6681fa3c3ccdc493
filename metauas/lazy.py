"""A package's public face whose names are imported on first use (PEP 562).

`metauas.model`, `trainer`, `inference` and `evaluation` hold torch code, while the CLI
imports every room's `commands.py` at start (and so each package's `__init__.py`) in a
base install without torch. Their faces therefore name their public surface in
`__all__` and import a name from its module only when it is first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, given {public name: its module, relative
    to the package}: `__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)`."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
