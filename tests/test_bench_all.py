"""`metauas bench all`: one table with a row per benchmark, each a ratio against its baseline."""

import re

import pytest

from metauas.cli import main


@pytest.mark.slow
def test_bench_all_prints_one_row_per_benchmark(capsys):
    assert main(["bench", "all", "--size", "64", "--pairs", "8", "--metric-images", "4"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): line
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| benchmark")
    }
    assert set(rows) == {"generate", "perlin", "train", "model", "metrics"}
    for line in rows.values():
        ratio = float(re.search(r"\| ([0-9.]+)x \|", line).group(1))
        assert ratio > 0
