"""predict and evaluate when the disk fills up, and with file names that are not UTF-8:
one line on a full disk with only whole files left (no final-named partial file, no
temporary file), and names that are bytes, not UTF-8, survive into every output."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
from fault_helpers import cli, one_line_error, run_main, temp_files

PREDICT = ["predict", "--method", "lookup", "--size", "32", "--no-progress"]
EVALUATE = ["evaluate", "--method", "lookup", "--size", "32", "--seeds", "1", "--no-progress"]
NAME = os.fsdecode(b"caf\xe9")  # a file name that is not UTF-8, as Python holds it


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _all_whole(out) -> None:
    """Every file left is complete: images decode, JSON parses; no temporary file."""
    assert not temp_files(out)
    for path in out.rglob("*"):
        if path.suffix == ".png":
            assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED) is not None, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def queries(mvtec_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("queries")
    for image in sorted((mvtec_root / "tile" / "test").rglob("*.png")):
        shutil.copy(image, folder / f"{image.parent.name}-{image.name}")
    return folder


def test_predict_on_a_full_disk_is_one_line_and_leaves_only_whole_files(
    tmp_path, small_disk, mvtec_root, queries, capsys
):
    args = [*PREDICT, "--prompt", mvtec_root / "tile" / "train" / "good" / "000.png", "--query", queries]
    assert run_main(capsys, *args, "--threshold", "0.5", "--out", tmp_path / "ref").returncode == 0
    disk = small_disk(f"{max(8, _size(tmp_path / 'ref') // 2 // 1024)}k")
    proc = cli(*args, "--threshold", "0.5", "--out", disk / "p")
    one_line_error(proc, "no space left on device", "rerun")
    _all_whole(disk / "p")


def test_evaluate_on_a_full_disk_is_one_line_and_leaves_only_whole_files(tmp_path, small_disk, mvtec_root, capsys):
    args = [*EVALUATE, "--data", mvtec_root]
    assert run_main(capsys, *args, "--out", tmp_path / "ref").returncode == 0
    for share in (2, 10):  # out of room while drawing overlays, then while writing the report
        disk = small_disk(f"{max(8, _size(tmp_path / 'ref') * (share - 1) // share // 1024)}k")
        proc = cli(*args, "--out", disk / "e")
        one_line_error(proc, "no space left on device", "rerun")
        _all_whole(disk / "e")


def test_names_that_are_not_utf8_survive_predict(tmp_path, mvtec_root):
    """A prompt, a query and --out named with bytes that are not UTF-8 (and a query whose
    stem is `.`): every output in its place, the names byte for byte."""
    queries = tmp_path / "q"
    queries.mkdir()
    shutil.copy(mvtec_root / "tile" / "test" / "blob" / "000.png", queries / f"{NAME}.png")
    shutil.copy(mvtec_root / "tile" / "test" / "blob" / "001.png", queries / "..png")  # its stem is "."
    prompt = tmp_path / f"n{NAME}.png"
    shutil.copy(mvtec_root / "tile" / "train" / "good" / "000.png", prompt)
    out = tmp_path / f"out{NAME}"
    args = ["--prompt", prompt, "--query", queries, "--threshold", "0.5", "--out", out]
    proc = cli(*PREDICT, *args, errors="surrogateescape")  # what it prints: the name's own bytes
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert os.fsencode(out / "predictions.jsonl") in proc.stdout.encode("utf-8", "surrogateescape")
    outputs = ["maps", "masks", "overlays", "predict-run.json", "predictions.csv", "predictions.jsonl"]
    assert sorted(p.name for p in out.iterdir()) == outputs
    for folder in ("overlays", "masks", "maps"):  # ..png is hidden in a folder: left out
        assert [p.name for p in (out / folder).iterdir()] == [f"{NAME}.png"]
    assert b"caf\xe9.png" in (out / "predictions.csv").read_bytes()
    [record] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert os.fsencode(record["query"]) == os.fsencode(queries / f"{NAME}.png")
    assert os.fsencode(record["prompt"][0]) == os.fsencode(prompt)
    dot = tmp_path / "dot"  # ..png named as the query itself: its outputs stay in their folders
    proc = cli(*PREDICT, *args[:3], queries / "..png", "--threshold", "0.5", "--out", dot)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in dot.iterdir()) == outputs
    for folder in ("overlays", "masks", "maps"):
        assert [p.name for p in (dot / folder).iterdir()] == ["..png"]


def test_names_that_are_not_utf8_survive_evaluate(tmp_path, mvtec_root):
    data = tmp_path / "bench"
    shutil.copytree(mvtec_root / "tile", data / NAME)
    defect = data / NAME / "test" / "blob"
    (defect / "000.png").rename(defect / f"{NAME}.png")
    (data / NAME / "ground_truth" / "blob" / "000_mask.png").rename(
        data / NAME / "ground_truth" / "blob" / f"{NAME}_mask.png"
    )
    out = tmp_path / "e"
    proc = cli(*EVALUATE, "--data", data, "--overlays", "3", "--out", out, errors="surrogateescape")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    drawn = {p.name for p in (out / "overlays" / "lookup" / NAME).iterdir()}
    assert any(name.endswith(f"blob-{NAME}.png") for name in drawn), drawn
    assert b"caf\xe9" in (out / "metrics.csv").read_bytes()
    assert "caf\\udce9" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text())["rows"][0]["class"] == NAME


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("size", ["5", "100000"])
def test_an_impossible_size_is_one_line_before_any_work(tmp_path, mvtec_root, capsys, command, size):
    """OpenCV would be asked for a 30 GB image (100000), torch for a pooling wider than
    the features (5): the side is checked first, as train's is."""
    image = mvtec_root / "tile" / "train" / "good" / "000.png"
    where = ["--prompt", image, "--query", image] if command == "predict" else ["--data", mvtec_root]
    args = [command, "--method", "lookup", *where, "--size", size, "--out", tmp_path / "o"]
    one_line_error(run_main(capsys, *args), "--size must be a whole number of pixels from 32 to 4096")


def test_a_lookup_sigma_wider_than_the_map_is_a_truncated_kernel(tmp_path, mvtec_root, capsys):
    """--lookup-sigma 100000 asked torch for a reflect padding of 300000 on a 32 px map
    (a traceback); the kernel now stops at the map's edge."""
    args = [*EVALUATE, "--data", mvtec_root, "--lookup-sigma", "100000", "--out", tmp_path / "e"]
    proc = run_main(capsys, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_maps_that_are_not_finite_are_one_line_from_either_backend():
    """NaN in the maps, from PyTorch or from an exported graph, is refused before anything
    is scored (`frame.check_finite`), not written as "score": NaN."""
    import torch

    from metauas.errors import UserError
    from metauas.inference.runtime import GraphBackend
    from metauas.inference.scoring import Scorer

    nan = [torch.full((1, 8, 4, 4), float("nan"))] * 4  # every encoder stage
    with pytest.raises(UserError, match="the lookup maps hold NaN or infinity") as err:
        Scorer(torch.nn.Identity(), methods=("lookup",)).maps([nan], nan, (16, 16))
    assert "\n" not in str(err.value)

    class Graph:
        def run(self, feed):
            return {"map": np.full((1, 1, 4, 4), np.inf, np.float32)}

    backend = object.__new__(GraphBackend)
    backend.full, backend.encoder, backend.head, backend.method, backend.shots = Graph(), None, None, "model", 1
    image = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(UserError, match="the model maps hold NaN or infinity"):
        backend.maps([[image]], [image])


def test_a_damaged_predict_manifest_is_one_line(tmp_path):
    """predict-run.json in --out decides which files a rerun may remove: one nested
    beyond reason (or of another shape) is one line, and nothing is removed."""
    from metauas.errors import UserError
    from metauas.inference.predict import MANIFEST, claim_out

    kept = tmp_path / "maps" / "000.png"
    kept.parent.mkdir()
    kept.write_bytes(b"x")
    for text in ("[" * 100_000, '{"files": 1}', "not json"):
        (tmp_path / MANIFEST).write_text(text)
        with pytest.raises(UserError, match=f"{MANIFEST} is damaged"):
            claim_out(tmp_path, ["maps/000.png"])
        assert kept.read_bytes() == b"x"
