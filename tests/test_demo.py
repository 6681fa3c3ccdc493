"""`metauas demo` end to end at toy scale: data, training, held-out report, reuse on rerun."""

import json

import pytest

from metauas.cli import main

METHODS = {"MetaUAS (trained)", "MetaUAS (step 0)", "lookup baseline"}


def _demo(out, real, *more: str) -> int:
    return main(
        [
            "demo",
            "--out",
            str(out),
            "--steps",
            "6",
            "--size",
            "64",
            "--train-pairs",
            "24",
            "--heldout-pairs",
            "16",
            "--batch-size",
            "4",
            "--real",
            str(real),
            "-q",
            *more,
        ]
    )


@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # forks DataLoader workers: run apart, one at a time (Makefile)
def test_demo_writes_a_report_and_reuses_its_work_on_rerun(tmp_path, mvtec_root, capsys):
    out = tmp_path / "demo"
    assert _demo(out, mvtec_root) == 0
    printed = capsys.readouterr().out
    assert f"report: {(out / 'report.html').resolve()}" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    real = metrics.pop("real")[mvtec_root.name]  # the real set: model, lookup and mix, mean over 5 prompt seeds
    assert [r["method"] for r in real] == ["model", "lookup", "mix"] and all(r["std"] for r in real)
    assert set(metrics) == METHODS
    for values in metrics.values():
        assert set(values) >= {"I-AUROC", "P-AUROC", "P-AP", "P-AUPRO"}
    html = (out / "report.html").read_text()
    for section in (
        "Held-out metrics",
        "Real defects",
        "Training loss",
        "Training pairs",
        "Held-out heatmaps",
        *METHODS,
    ):
        assert section in html
    assert html.count("<img") >= 2
    assert "Lookup baseline: its own frozen tf_efficientnet_lite2 encoder" in html  # the baseline says what it is

    shards = sorted((out / "data").rglob("*.tar"))
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    checkpoint = out / "run" / "last.pt"
    checkpoint_stamp = checkpoint.stat().st_mtime_ns
    log_lines = (out / "run" / "metrics.jsonl").read_text().count("\n")

    assert _demo(out, mvtec_root) == 0  # second run: nothing regenerated, no further training
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps
    assert checkpoint.stat().st_mtime_ns == checkpoint_stamp
    assert (out / "run" / "metrics.jsonl").read_text().count("\n") == log_lines
    again = json.loads((out / "metrics.json").read_text())
    assert again.pop("real")[mvtec_root.name] == real and again == metrics

    # a demo folder made with other settings (an earlier version's recipe) is refused in
    # one line before anything is written, not mixed with the new recipe's data
    capsys.readouterr()
    assert _demo(out, mvtec_root, "--instance-prompts", "0") == 2
    assert "holds a demo made with other settings" in capsys.readouterr().err
    # and a finished run of another batch size is not reported as this recipe's model
    assert _demo(out, mvtec_root, "--batch-size", "2") == 2
    assert "holds a demo run trained with other settings (batch_size" in capsys.readouterr().err
    assert checkpoint.stat().st_mtime_ns == checkpoint_stamp
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps
