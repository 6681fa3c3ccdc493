"""`metauas bench all`: one table with a row per benchmark, each a ratio against its baseline."""

import re
import subprocess
import sys

import pytest


# `bench all` starts process pools and DataLoader workers: run as the command a user types,
# in its own process, apart from the other process-driving tests (Makefile), so a worker
# that dies takes this command down with its stderr shown, not the test runner's worker
@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_bench_all_prints_one_row_per_benchmark(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "metauas.cli", "bench", "all", "--size", "64", "--pairs", "8", "--metric-images", "4"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| benchmark")
    }
    assert set(rows) == {"generate", "perlin", "train", "model", "metrics"}
    for line in rows.values():
        ratio = float(re.search(r"\| ([0-9.]+)x \|", line).group(1))
        assert ratio > 0
