"""predict's --out holds this run's files only; query folders searched recursively on
request; a warning when scoring far from the training size."""

from __future__ import annotations

import json
import shutil

from metauas.cli import main


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _predict(args, capsys) -> tuple[int, str]:
    code = main(["predict", "--method", "lookup", "--size", "64", "--no-progress", *args])
    return code, capsys.readouterr().err


def test_a_rerun_clears_the_previous_runs_files(mvtec_root, tmp_path, capsys):
    tile, out = mvtec_root / "tile", tmp_path / "out"
    prompt = ["--prompt", str(tile / "train/good/000.png")]
    code, err = _predict([*prompt, "--query", str(tile / "test/blob"), "--out", str(out), "--threshold", "0.3"], capsys)
    assert code == 0, err
    assert {"maps/000.png", "masks/002.png", "overlays/001.png", "predict-run.json"} <= _files(out)
    code, err = _predict([*prompt, "--query", str(tile / "test/good/000.png"), "--out", str(out)], capsys)
    assert code == 0, err
    assert _files(out) == {
        "maps/000.png",
        "overlays/000.png",
        "predictions.csv",
        "predictions.jsonl",
        "predict-run.json",
    }  # no masks/ and no maps of the first run's queries
    assert json.loads((out / "predict-run.json").read_text())["files"] == [
        "predictions.jsonl",
        "predictions.csv",
        "maps/000.png",
        "overlays/000.png",
    ]


def test_a_folder_with_other_files_is_refused_before_any_work(mvtec_root, tmp_path, capsys):
    tile = mvtec_root / "tile"
    args = ["--prompt", str(tile / "train/good/000.png"), "--query", str(tile / "test/blob/000.png")]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, err = _predict([*args, "--out", str(mine)], capsys)
    assert code == 2 and "is not empty and was not written by metauas predict" in err and err.count("\n") == 1
    assert _files(mine) == {"notes.txt"}
    used = tmp_path / "used"
    assert _predict([*args, "--out", str(used)], capsys)[0] == 0
    (used / "maps" / "extra.png").write_bytes(b"x")
    code, err = _predict([*args, "--out", str(used)], capsys)
    assert code == 2 and "holds files predict did not write (maps/extra.png)" in err
    assert "predictions.csv" in _files(used)  # nothing of the earlier run removed either


def test_recursive_query_folders_keep_their_subfolders(mvtec_root, tmp_path, capsys):
    tile = mvtec_root / "tile"
    queries = tmp_path / "queries"
    shutil.copytree(tile / "test", queries)  # blob/000.png and good/000.png share a name
    out = tmp_path / "out"
    args = ["--prompt", str(tile / "train/good/000.png"), "--query", str(queries), "--out", str(out)]
    code, err = _predict(args, capsys)
    assert code == 2 and "no images in query folder" in err and "--recursive searches its subfolders" in err
    code, err = _predict([*args, "--recursive"], capsys)
    assert code == 0, err
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["map"] for r in records] == [
        "maps/blob/000.png",
        "maps/blob/001.png",
        "maps/blob/002.png",
        "maps/good/000.png",
        "maps/good/001.png",
    ]


def test_scoring_far_from_the_training_size_warns(mvtec_root, checkpoint, tmp_path, capsys):
    tile = mvtec_root / "tile"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--size",
            "128",
            "--prompt",
            str(tile / "train/good/000.png"),
            "--query",
            str(tile / "test/blob/000.png"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0 and "warning: scoring at 128 px, 2.0x from the model's training size 64 px" in err
    code = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--size",
            "64",
            "--prompt",
            str(tile / "train/good/000.png"),
            "--query",
            str(tile / "test/blob/000.png"),
            "--out",
            str(tmp_path / "p"),
            "--no-progress",
        ]
    )
    assert code == 0 and "warning" not in capsys.readouterr().err
