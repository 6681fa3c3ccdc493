"""Helpers of the fault suite: the CLI in a real subprocess, its one-line errors, a
real size-limited filesystem, and a kill at a point set by CPU time (imported by name:
pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE = "import sys; from metauas.cli import main; sys.exit(main(sys.argv[1:]))"
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives: no torchrun variables (a test run under a
    launcher must not turn the CLI into one rank of a group), one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def cli(*args: str, cpu_seconds: int | None = None, **kw) -> subprocess.CompletedProcess:
    """`metauas ARGS` as a user runs it; with `cpu_seconds`, the kernel SIGKILLs it when
    it has used that much CPU time (RLIMIT_CPU): a kill at a point set by work done, not
    by a wall clock that a busy machine stretches."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    return subprocess.run(
        [sys.executable, "-c", CODE, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env(),
        preexec_fn=limit if cpu_seconds else None,
        **kw,
    )


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """`metauas ARGS` in this process (cli.main, the console script's entry point): the
    same code as a subprocess without paying for the interpreter and imports again."""
    from metauas.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def popen(*args: str, code: str = CODE, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# Prepended to CODE: the process stops itself (SIGSTOP) the first time it opens (EVENT
# "open") or renames ("os.rename", also raised by os.replace) a file whose path holds
# MARKER (an audit hook sees every one), at a point set by what it does, not by when the
# scheduler runs it.
FREEZE = """
import os, signal, sys
frozen = []
def freeze(event, args):
    if not frozen and event == EVENT and MARKER in str(args[0]):
        frozen.append(True)
        os.kill(os.getpid(), signal.SIGSTOP)
sys.addaudithook(freeze)
"""


def frozen_at(marker: str, *args: str, event: str = "open") -> subprocess.Popen:
    """`metauas ARGS` started, and returned once it has stopped itself at its first
    `event` ("open" or "os.rename") of a path holding `marker` (`waitpid(WUNTRACED)`
    blocks until then; no polling, no timing). The caller sends SIGCONT or kills it. An
    AssertionError if it ended before."""
    code = f"MARKER = {marker!r}\nEVENT = {event!r}\n{FREEZE}\n{CODE}"
    proc = popen(*args, code=code)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(
            f"metauas {' '.join(map(str, args[:1]))} ended before opening {marker}: {proc.communicate()}"
        )
    return proc


def cpu_of(fn) -> float:
    """CPU seconds the child processes started by `fn()` used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2 and a single `error:` line holding `words`; never a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def mount_tmpfs(path: Path, size: str, *options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)


def remount(path: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def cli_peak(*args: str, **kw) -> tuple[subprocess.CompletedProcess, int]:
    """`metauas ARGS` as `cli` runs it, and the most memory it held (its own peak RSS, in
    bytes, from wait4: not the largest of all children this process ever waited for)."""
    proc = popen(*args, **kw)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return subprocess.CompletedProcess(args, proc.returncode, out, err), usage.ru_maxrss * 1024
