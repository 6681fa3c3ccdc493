"""The one exception type that means "the user asked for something we cannot do".

Commands raise `UserError` for bad input (missing files, wrong flags, empty sources);
the CLI prints its message as one line and exits with status 2, never a traceback.
Anything else escaping is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, reported as one clear line."""
