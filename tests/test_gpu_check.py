"""benchmarks/gpu_check.sh in its CPU form: the same steps a GPU machine runs (generate,
DDP training under torchrun, resume, bench train, bench model, evaluate), gloo instead of
NCCL, toy sizes. It must print its table with every step ok."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
# the multi-process tests (torchrun, a training and an evaluation each) are one group:
# `make test-slow` runs them after the others, one at a time, in a pytest process of their
# own (the Makefile says why)
pytestmark = pytest.mark.xdist_group("processes")
STEPS = ("generate", "generate held-out", "DDP train", "resume", "bench train", "bench model", "evaluate")


def _run(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--tiny", "--out", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        start_new_session=True,  # its own process group: nothing it signals reaches this worker
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def _rows(out: str) -> dict[str, str]:
    return {
        cells[1].strip(): cells[3].strip()
        for cells in (line.split("|") for line in out.splitlines())
        if len(cells) == 5 and cells[1].strip() in STEPS
    }


@pytest.mark.slow  # the whole check in its CPU form: a minute or two on 2 cores
def test_cpu_form_runs_every_step(tmp_path):
    rows = _rows(_run(tmp_path))
    assert set(rows) == set(STEPS) and "FAILED" not in "".join(rows.values())
    assert "pairs/s per process" in rows["DDP train"] and "P-AUROC" in rows["evaluate"]


@pytest.mark.slow
def test_cpu_form_with_the_papers_model(tmp_path):
    rows = _rows(_run(tmp_path, "--model", "paper", "--steps", "6"))
    assert set(rows) == set(STEPS)


def test_a_failing_step_stops_the_check_with_its_error(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    (tmp_path / "out" / "run").mkdir(parents=True)
    (tmp_path / "out" / "run" / "last.pt").write_bytes(b"not ours")  # training refuses an occupied run dir
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--tiny", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 1 and "| DDP train |" in proc.stdout and "FAILED" in proc.stdout
    assert "already holds a run" in proc.stderr
