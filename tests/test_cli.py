"""The command line as a user meets it: help everywhere, one-line errors, no torch at start."""

import subprocess
import sys

import typer.main

from metauas import __version__
from metauas.cli import app, main


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_help_text():
    root = typer.main.get_command(app)
    commands = list(_walk(root))
    assert len(commands) > 2
    for path, command in commands:
        assert (command.help or "").strip(), f"metauas {' '.join(path)} has no help"
        for param in command.params:
            if param.name in ("help",) or param.param_type_name == "argument":
                continue
            assert (getattr(param, "help", "") or "").strip(), f"metauas {' '.join(path)} --{param.name} has no help"


def test_help_and_version_exit_cleanly(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, metauas.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
