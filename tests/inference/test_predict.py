"""`metauas predict` on single files and folders, and its one-line errors."""

from __future__ import annotations

import json

import cv2
import numpy as np

from metauas.cli import main


def _run(args, capsys):
    code = main(["predict", *args])
    return code, capsys.readouterr().err


def test_predict_single_file_and_folder(mvtec_root, checkpoint, tmp_path, capsys):
    tile = mvtec_root / "tile"
    out = tmp_path / "one"
    code, err = _run(
        [
            "--checkpoint",
            str(checkpoint),
            "--prompt",
            str(tile / "train/good/000.png"),
            "--query",
            str(tile / "test/blob/001.png"),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    [line] = (out / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["prompt"] == [str(tile / "train/good/000.png")] and 0 <= record["score"] <= 1
    saved = cv2.imread(str(out / record["map"]), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint16 and saved.shape == (64, 64)
    assert abs(saved.max() / 65535 - record["score"]) < 1e-4
    overlay = cv2.imread(str(out / record["overlay"]))
    assert overlay.shape[0] > 64 and overlay.shape[1] > 3 * 64  # titles over prompt | query | heatmap, colour bar

    out = tmp_path / "dir"
    code, err = _run(
        [
            "--checkpoint",
            str(checkpoint),
            "--prompt-dir",
            str(tile / "train/good"),
            "--query",
            str(tile / "test/blob"),
            "--out",
            str(out),
            "--map-format",
            "npy",
            "--batch-size",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["query"].rsplit("/", 1)[1] for r in records] == ["000.png", "001.png", "002.png"]
    assert all(len(r["prompt"]) == 1 for r in records)  # the closest of the three prompts
    assert np.load(out / records[0]["map"]).shape == (64, 64)


def test_predict_lookup_without_checkpoint_marks_the_defect(mvtec_root, tmp_path, capsys):
    tile = mvtec_root / "tile"
    out = tmp_path / "lk"
    code, err = _run(
        [
            "--method",
            "lookup",
            "--prompt",
            str(tile / "train/good/000.png"),
            "--prompt",
            str(tile / "train/good/001.png"),
            "--use-all-prompts",
            "--query",
            str(tile / "test/blob/000.png"),
            "--out",
            str(out),
            "--map-format",
            "npy",
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((out / "predictions.jsonl").read_text())
    assert len(record["prompt"]) == 2
    score_map = np.load(out / record["map"])
    mask = cv2.imread(str(tile / "ground_truth/blob/000_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert score_map[mask].mean() > 2 * score_map[~mask].mean()


def test_predict_errors_are_one_line_each(mvtec_root, checkpoint, tmp_path, capsys):
    tile = mvtec_root / "tile"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "broken.png").write_bytes(b"not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    prompt = str(tile / "train/good/000.png")
    ck = ["--checkpoint", str(checkpoint)]
    cases = [
        ([*ck, "--prompt", prompt, "--query", str(tmp_path / "missing.png")], "query not found"),
        ([*ck, "--prompt", str(tmp_path / "nope.png"), "--query", prompt], "prompt image not found"),
        ([*ck, "--query", prompt], "with --prompt or --prompt-dir"),
        ([*ck, "--prompt", prompt, "--prompt-dir", str(tile), "--query", prompt], "one of them"),
        ([*ck, "--prompt", prompt, "--query", str(bad_dir)], "cannot read image"),
        ([*ck, "--prompt", str(bad_dir / "broken.png"), "--query", prompt], "cannot read image"),
        ([*ck, "--prompt", prompt, "--query", str(empty)], "no images in query folder"),
        (["--prompt", prompt, "--query", prompt], "needs --checkpoint"),
        ([*ck, "--prompt", prompt, "--query", prompt, "--map-format", "tiff"], "'tiff' is not one of 'png16', 'npy'"),
    ]
    for args, message in cases:
        code, err = _run([*args, "--out", str(tmp_path / "o")], capsys)
        assert code == 2, (args, err)
        assert message in err and err.count("\n") == 1, err
