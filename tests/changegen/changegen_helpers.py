"""Helpers shared by the changegen tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`metauas ARGS` in a fresh interpreter, as a user runs it."""
    code = "import sys; from metauas.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"metauas {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def read_back(out: Path) -> list[dict]:
    """Every sample of a dataset read with plain webdataset, decoded to numpy."""
    import webdataset as wds

    urls = sorted(str(p) for p in out.glob("*.tar"))
    ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8")
    return list(ds)
