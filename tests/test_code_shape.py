"""House rules that keep the code readable (docs/decisions.md): every function fits on
one screen, and no option values are copied around through `locals()`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "metauas"
MAX_FUNCTION_LINES = 60


def _trees():
    for path in sorted(ROOT.rglob("*.py")):
        yield path.relative_to(ROOT.parent), ast.parse(path.read_text())


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_the_training_loop_stays_one_concern():
    """trainer/train.py is the loop alone: the schedule, losses, validation, run log and
    checkpoints live in rooms of their own, so the loop reads in under 300 lines."""
    lines = len((ROOT / "trainer" / "train.py").read_text().splitlines())
    assert lines < 300, f"trainer/train.py has {lines} lines: move a concern into its own room"


def test_no_option_values_travel_through_locals():
    calls = [
        f"{path}:{node.lineno}"
        for path, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "locals"
    ]
    assert not calls, calls


# the command line's own modules: they name options as the user typed them
COMMAND_LAYER = {"cli.py", "options.py", "commands.py"}


def test_library_errors_name_settings_not_options():
    """A library error names the setting as the library calls it (`warmup_steps`); the
    command that runs it writes the option instead (`UserError.named`). A hint to run
    another command is written as that command line (`metauas export --cached-prompt`)."""
    import re

    flagged = []
    for path, tree in _trees():
        if path.name in COMMAND_LAYER:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError":
                texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                texts = [re.sub(r"`metauas [^`]*`", "", t) for t in texts]
                flagged += [f"{path}:{node.lineno}" for t in texts if re.search(r"(?<![\w-])--[a-z]", t)]
    assert not flagged, flagged
