"""predict writes each map at its query's own size, also for a non-square query."""

from __future__ import annotations

import json

import cv2
import numpy as np

from metauas.cli import main


def test_maps_of_a_non_square_query_are_at_its_own_size(mvtec_root, checkpoint, tmp_path, capsys):
    prompt = mvtec_root / "tile" / "train" / "good" / "000.png"
    query = tmp_path / "wide.png"
    cv2.imwrite(str(query), np.random.default_rng(0).integers(0, 255, (37, 91, 3), dtype=np.uint8))
    for fmt, suffix in (("png16", ".png"), ("npy", ".npy")):
        out = tmp_path / fmt
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    str(checkpoint),
                    "--prompt",
                    str(prompt),
                    "--query",
                    str(query),
                    "--out",
                    str(out),
                    "--map-format",
                    fmt,
                    "--no-progress",
                ]
            )
            == 0
        ), capsys.readouterr().err
        record = json.loads((out / "predictions.jsonl").read_text())
        path = out / record["map"]
        assert path.suffix == suffix
        score_map = np.load(path) if fmt == "npy" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert score_map.shape == (37, 91)
        assert score_map.dtype == (np.float32 if fmt == "npy" else np.uint16)
