"""`metauas evaluate` end to end on a tiny MVTec-layout benchmark drawn by the tests."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from metauas.cli import main
from metauas.evaluation.metrics import METRICS


def _run(args, capsys):
    code = main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("mode", ["random", "best", "pool"])
def test_both_methods_every_prompt_mode(mode, mvtec_root, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "--data",
        str(mvtec_root),
        "--checkpoint",
        str(checkpoint),
        "--method",
        "both",
        "--prompt-mode",
        mode,
        "--seeds",
        "1,3" if mode == "random" else "5",
        "--out",
        str(out),
        "--shots",
        "2" if mode == "pool" else "1",
    ]  # pool: K-shot with per-query prompts
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    rows = {(r["class"], r["method"]) for r in result["rows"]}
    assert rows == {(c, m) for c in ("plate", "tile", "mean") for m in ("model", "lookup")}
    assert result["resolved"]["size"] == 64  # the checkpoint's training size
    assert len(result["runs"]) == (2 if mode == "random" else 1)
    mean = next(r for r in result["rows"] if r["class"] == "mean" and r["method"] == "model")
    assert set(mean["metrics"]) == set(METRICS)
    assert all(0.0 <= v <= 1.0 for v in mean["metrics"].values())
    assert (mean["std"] is None) == (mode != "random")
    md = (out / "metrics.md").read_text()
    assert "Protocol: **exact**" in md and "| tile | model |" in md and "| tile | lookup |" in md
    assert "ms/image at 64 px" in md and "learnable" in md
    header = next(csv.reader(open(out / "metrics.csv")))
    assert header[2:9] == list(METRICS)
    assert list((out / "overlays" / "model" / "tile").glob("worst-*.png"))
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(result["overlays"]) > 0 and "exact" in page
    assert "| mean | lookup |" in stdout


def test_lookup_without_checkpoint_finds_drawn_defects(mvtec_root, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(
        ["--data", str(mvtec_root), "--method", "lookup", "--size", "64", "--classes", "tile", "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    tile = next(r for r in result["rows"] if r["class"] == "tile")["metrics"]
    # dark blobs on a regular texture: the pretrained patch lookup must find them
    assert tile["I-AUROC"] > 0.9 and tile["P-AUROC"] > 0.9 and tile["P-AUPRO"] > 0.7
    assert [r["class"] for r in result["rows"]] == ["tile", "mean"]


def test_kshot_official_protocol_and_prompt_file_replay(mvtec_root, checkpoint, tmp_path, capsys):
    out = tmp_path / "k"
    code, _, err = _run(
        [
            "--data",
            str(mvtec_root),
            "--checkpoint",
            str(checkpoint),
            "--shots",
            "2",
            "--shot-fusion",
            "max",
            "--method",
            "model",
            "--classes",
            "tile",
            "--protocol",
            "official",
            "--image-score",
            "topk",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "Protocol: **official**" in (out / "metrics.md").read_text()
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"7": {"tile": "tile/train/good/002.png", "plate": ["plate/train/good/000.png"]}}))
    # (plate is listed but not evaluated: --classes tile)
    out2 = tmp_path / "replay"
    code, _, err = _run(
        [
            "--data",
            str(mvtec_root),
            "--checkpoint",
            str(checkpoint),
            "--prompts",
            str(prompts),
            "--method",
            "model",
            "--classes",
            "tile",
            "--overlays",
            "0",
            "--out",
            str(out2),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((out2 / "metrics.json").read_text())
    assert list(result["runs"]) == ["file-seed7"]


def test_bad_inputs_are_one_line_errors(mvtec_root, checkpoint, tmp_path, capsys):
    cases = [
        (["--data", str(tmp_path / "nope"), "--method", "lookup"], "data folder not found"),
        (["--data", str(mvtec_root), "--method", "model"], "needs --checkpoint"),
        (
            ["--data", str(mvtec_root), "--checkpoint", str(checkpoint), "--prompt-mode", "closest"],
            "'closest' is not one of 'random'",
        ),
        (["--data", str(mvtec_root), "--method", "lookup", "--seeds", "-1"], "--seeds must be non-negative"),
        (["--data", str(mvtec_root), "--method", "lookup", "--classes", "wheel"], "classes not in"),
        (["--data", str(mvtec_root), "--method", "lookup", "--shots", "9"], "needs at least 9"),
        (["--data", str(mvtec_root), "--method", "lookup", "--seeds", "a,b"], "comma-separated whole numbers"),
    ]
    for args, message in cases:
        code, _, err = _run([*args, "--out", str(tmp_path / "o")], capsys)
        assert code == 2, (args, err)
        assert message in err and err.count("\n") == 1, err


def test_missing_and_wrong_size_masks_are_reported_not_used(mvtec_root, tmp_path, capsys):
    import cv2
    import numpy as np

    root = tmp_path / "data"
    shutil.copytree(mvtec_root / "tile", root / "tile")
    (root / "tile" / "ground_truth" / "blob" / "000_mask.png").unlink()
    cv2.imwrite(str(root / "tile" / "ground_truth" / "blob" / "001_mask.png"), np.zeros((10, 10), np.uint8))
    out = tmp_path / "out"
    code, _, err = _run(["--data", str(root), "--method", "lookup", "--out", str(out)], capsys)
    assert code == 0 and "2 data problem(s)" in err
    result = json.loads((out / "metrics.json").read_text())
    assert any("without a mask" in p and "000.png" in p for p in result["problems"])
    assert any("not the image's size" in p and "001_mask.png" in p for p in result["problems"])
    assert "Data problems (2)" in (out / "metrics.md").read_text()


def test_visa_raw_and_prepared_give_the_same_metrics(checkpoint, tmp_path, capsys):
    """The same VisA stand-in evaluated from its raw CSV and from prepare_data.py's folder."""
    from make_data import make_visa_raw, prepare_visa

    raw = make_visa_raw(tmp_path / "VisA", {"candle": (200, 180, 90), "pcb1": (60, 140, 70)})
    prepared = prepare_visa(raw, tmp_path / "VisA_pytorch")
    results = {}
    for name, data in {"raw": raw, "prepared": prepared / "1cls"}.items():
        out = tmp_path / name
        code, _, err = _run(
            [
                "--data",
                str(data),
                "--format",
                "visa",
                "--checkpoint",
                str(checkpoint),
                "--method",
                "model",
                "--seeds",
                "3",
                "--out",
                str(out),
            ],
            capsys,
        )
        assert code == 0, err
        results[name] = {
            (r["class"], r["method"]): r["metrics"] for r in json.loads((out / "metrics.json").read_text())["rows"]
        }
    assert results["raw"].keys() == results["prepared"].keys() and results["raw"][("pcb1", "model")]["P-AUROC"] > 0
    for key, metrics in results["raw"].items():  # same pixels, same order, same batches: equal to the bit
        assert metrics == results["prepared"][key], key


def test_config_from_metrics_json_repeats_the_evaluation(mvtec_root, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    code, _, err = _run(
        [
            "--data",
            str(mvtec_root),
            "--method",
            "lookup",
            "--seeds",
            "2,4",
            "--lookup-sigma",
            "1",
            "--image-score",
            "topk",
            "--score-topk",
            "7",
            "--overlays",
            "0",
            "--out",
            str(first),
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = _run(["--config", str(first / "metrics.json"), "--out", str(second)], capsys)
    assert code == 0, err
    a, b = (json.loads((out / "metrics.json").read_text()) for out in (first, second))
    assert a["runs"] == b["runs"] and a["rows"] == b["rows"] and a["resolved"] == b["resolved"]
    assert b["config"]["lookup"]["sigma"] == 1 and b["config"]["metric"]["topk"] == 7
    assert b["resolved"]["runs"] == ["seed2", "seed4"] and b["resolved"]["image_score"] == "mean of top-7"
    code, _, err = _run(["--config", str(first / "metrics.json"), "--out", str(tmp_path / "c"), "--seeds", "3"], capsys)
    assert code == 0 and list(json.loads((tmp_path / "c" / "metrics.json").read_text())["runs"]) == ["seed3"]


def test_the_authors_prompt_files_replay_a_random_run_exactly(mvtec_root, tmp_path, capsys):
    from metauas.evaluation.readers import read_benchmark
    from metauas.inference.policy import random_prompts

    random_run = tmp_path / "random"
    code, _, err = _run(
        ["--data", str(mvtec_root), "--method", "lookup", "--seeds", "3", "--overlays", "0", "--out", str(random_run)],
        capsys,
    )
    assert code == 0, err
    table = {}  # the layout of gaobb/MetaUAS data/<set>/oneprompt_seedN.json
    for data in read_benchmark(mvtec_root, "mvtec").classes:
        [prompt] = random_prompts(data.train, 1, 3, data.name)
        table[data.name] = {
            "filename": str(prompt.relative_to(mvtec_root)),
            "label": 0,
            "label_name": "good",
            "clsname": data.name,
        }
    (tmp_path / "oneprompt_seed3.json").write_text(json.dumps(table))
    replay = tmp_path / "replay"
    code, _, err = _run(
        [
            "--data",
            str(mvtec_root),
            "--method",
            "lookup",
            "--prompts",
            str(tmp_path / "oneprompt_seed3.json"),
            "--overlays",
            "0",
            "--out",
            str(replay),
        ],
        capsys,
    )
    assert code == 0, err
    a, b = (json.loads((out / "metrics.json").read_text()) for out in (random_run, replay))
    assert list(b["runs"]) == ["file-seed3"] and b["runs"]["file-seed3"] == a["runs"]["seed3"]


def test_fitted_threshold_is_predicts_rule_and_its_f1_never_beats_f1max(mvtec_root, tmp_path, capsys):
    import metauas
    from metauas.evaluation.readers import read_benchmark
    from metauas.inference.policy import random_prompts

    out = tmp_path / "fit"
    code, _, err = _run(
        [
            "--data",
            str(mvtec_root),
            "--method",
            "lookup",
            "--seeds",
            "5",
            "--size",
            "64",
            "--overlays",
            "0",
            "--fit-normals",
            "8",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    model = metauas.load(method="lookup", size=64, device="cpu")
    for data in read_benchmark(mvtec_root, "mvtec").classes:
        run = result["runs"]["seed5"][data.name]["lookup"]
        [prompt] = random_prompts(data.train, 1, 5, data.name)
        spare = [p for p in data.train if p != prompt]  # all of them: fewer than --fit-normals
        expected = max(r.score for r in model.segment(spare, prompt=prompt))
        assert run["threshold"] == pytest.approx(expected, abs=1e-6)
        assert run["I-F1@t"] <= run["I-F1max"] + 1e-9 and run["P-F1@t"] <= run["P-F1max"] + 1e-9
    assert sorted(r["class"] for r in result["thresholds"]) == ["plate", "tile"]
    assert "Fitted thresholds" in (out / "metrics.md").read_text()
