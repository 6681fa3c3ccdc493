"""Commands copied from the docs, as the docs tests run them.

A page's fenced blocks are read as printed (`blocks`, `fenced`); a shell block becomes its commands
(`shell_lines`: continuation lines joined, comments dropped). `as_run` is the one rewrite
every docs test makes: `torchrun` becomes `python -m torch.distributed.run` with 2
processes (gloo on the CPU) and a free port, `metauas` this interpreter's
`python -m metauas.cli`, and the test's toy flags are appended (typed last, they override
the page's sizes, step and worker counts; a recipe's values too). `TOY` holds the toy
flags per command.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"
TOY = {
    "generate": "--num-pairs 24 --size 64 --shard-size 6 --workers 1 --inpainter opencv --no-progress -q",
    "train": "--encoder-weights none --size 64 --steps 2 --global-batch-size 4 --workers 0 --val-pairs 4 "
    "--val-every 100 --save-every 100 --no-progress -q",
    "evaluate": "--size 64 --overlays 0 -q",
}


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a page, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks of a page, in order."""
    return [body for lang, body in blocks(text) if lang == language]


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments (whole lines and
    trailing ` # ...`) and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", body)
    lines = (re.sub(r"(^|\s+)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def cli_args(command: str) -> list[str] | None:
    """The arguments `metauas` gets from a command line (`metauas ...` or
    `torchrun ... -m metauas.cli ...`); None for any other program."""
    words = shlex.split(command)
    if words[0] == "metauas":
        return words[1:]
    if words[0] == "torchrun" and "metauas.cli" in words:
        return words[words.index("metauas.cli") + 1 :]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_run(command: str, flags: str = "") -> str:
    """The command as a test runs it: 2 CPU processes, this interpreter, `flags` appended."""
    python = sys.executable
    command = re.sub(r"--nproc-per-node \d+", "--nproc-per-node 2", command)
    if command.startswith("torchrun"):
        port = "" if "--master-port" in command else f"--master-port {_free_port()} "
        command = re.sub(r"--master-port \d+", f"--master-port {_free_port()}", command)
        command = command.replace("torchrun ", f"{python} -m torch.distributed.run {port}", 1)
    command = re.sub(r"^metauas ", f"{python} -m metauas.cli ", command)
    return f"{command} {flags}".rstrip()


def run_shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one rewritten command in bash; a failure shows the command and its output's end."""
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc
