"""The one exception type that means "the user asked for something we cannot do".

Commands raise `UserError` for bad input (missing files, wrong settings, empty sources);
the CLI prints its message as one line and exits with status 2, never a traceback.
Anything else escaping is a bug and keeps its traceback.

Library code names a setting at fault by its Python name in backticks (a config field,
`warmup_steps` or `model.topk`, or a function's parameter), since a library user set it
by that name and knows no command line; a command replaces each name it offers as an
option with the option's name (`named`), so the same mistake reads `--warmup` there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


class UserError(Exception):
    """A mistake in the user's input, reported as one clear line."""

    def named(self, options: Mapping[str, str]) -> UserError:
        """This error with each `name` that `options` knows written as its option
        (`warmup_steps` -> --warmup); names it does not know stay as they are."""
        text = _NAME.sub(lambda m: options.get(m[1], m[0]), str(self))
        return self if text == str(self) else UserError(text)
