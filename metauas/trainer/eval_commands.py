"""Command registration for this part of the CLI (filled in by its owner)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this part's commands to the main app and the `bench` sub-app."""
