"""A contact sheet of a dataset: per sample prompt | query | mask over the query, with
its change type — the first thing a user looks at to trust a dataset.

Shards are read with `data.format`, the torch-free reader, so the preview needs
neither webdataset nor torch; corrupt samples are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from metauas.data.format import ReadStats, iter_pairs
from metauas.data.images import draw_mask, drawable
from metauas.errors import UserError
from metauas.outputs import check_file, write_atomic

CELL = 160  # side of one image in the sheet
LABEL = 20  # height of the text strip under a triplet
TRIPLETS_PER_ROW = 2


def _triplet(pair: dict) -> np.ndarray:
    cells = [
        cv2.resize(im, (CELL, CELL), interpolation=cv2.INTER_AREA)
        for im in (pair["prompt"], pair["query"], draw_mask(pair["query"], pair["mask"]))
    ]
    strip = np.full((LABEL, 3 * CELL, 3), 32, np.uint8)
    meta = pair["meta"]
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    text = f"{meta.get('index', pair['key'])}  {meta.get('change', '?')}  {source.get('kind', '')}"
    # from the sample's JSON and key: a lone surrogate there would crash OpenCV's binding
    cv2.putText(strip, drawable(text, 60), (4, LABEL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255,) * 3, 1, cv2.LINE_AA)
    return np.vstack([np.hstack(cells), strip])


def contact_sheet(shards: list[Path], n: int, stats: ReadStats | None = None) -> np.ndarray:
    """The first n readable samples as an RGB sheet, TRIPLETS_PER_ROW triplets per row."""
    stats = stats if stats is not None else ReadStats()
    tiles = []
    for pair in iter_pairs([str(s) for s in shards], stats):
        tiles.append(_triplet(pair))
        if len(tiles) == n:
            break
    if not tiles:
        detail = f": {stats.summary()}" if stats.skipped else ""
        raise UserError(f"the shards hold no readable samples{detail}")
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % TRIPLETS_PER_ROW)
    rows = [np.hstack(tiles[i : i + TRIPLETS_PER_ROW]) for i in range(0, len(tiles), TRIPLETS_PER_ROW)]
    return np.vstack(rows)


def write_preview(shards: list[Path], out: Path, n: int, stats: ReadStats | None = None) -> Path:
    """Draw the sheet into `out`; the output name is checked before any shard is read."""
    check_file(out, (".png", ".jpg", ".jpeg"))
    sheet = contact_sheet(shards, n, stats)
    _, data = cv2.imencode(out.suffix.lower(), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    try:
        write_atomic(out, data.tobytes())
    except OSError as err:
        raise UserError(f"could not write {out} ({err.strerror or err})") from None
    return out
