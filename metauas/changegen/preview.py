"""A contact sheet of a dataset: per sample prompt | query | mask over the query, with
its change type — the first thing a user looks at to trust a dataset.

Shards are read with the standard library's tarfile (a shard is a plain tar), so the
preview needs neither webdataset nor torch.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from metauas.changegen.images import decode
from metauas.errors import UserError

CELL = 160  # side of one image in the sheet
LABEL = 20  # height of the text strip under a triplet
TRIPLETS_PER_ROW = 2


def read_samples(shards: list[Path]) -> Iterator[dict]:
    """Samples of changepair/1 shards, in order: {"prompt", "query", "mask", "json"}."""
    for path in shards:
        if not path.is_file():
            raise UserError(f"shard {path} does not exist")
        try:
            tar = tarfile.open(path)
        except tarfile.TarError as err:
            raise UserError(f"{path} is not a tar shard ({err})") from None
        with tar:
            current, fields = None, {}
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key != current and fields:
                    yield fields
                    fields = {}
                current = key
                fields[ext.split(".")[0]] = tar.extractfile(member).read()
            if fields:
                yield fields


def _triplet(fields: dict) -> np.ndarray:
    prompt, query = decode(fields["prompt"]), decode(fields["query"])
    mask = decode(fields["mask"], grey=True) > 127
    overlay = query.copy()
    overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, (255, 255, 0), 1)
    cells = [cv2.resize(im, (CELL, CELL), interpolation=cv2.INTER_AREA) for im in (prompt, query, overlay)]
    strip = np.full((LABEL, 3 * CELL, 3), 32, np.uint8)
    meta = json.loads(fields["json"])
    text = f"{meta['index']}  {meta['change']}  {meta['source'].get('kind', '')}"
    cv2.putText(strip, text, (4, LABEL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([np.hstack(cells), strip])


def contact_sheet(shards: list[Path], n: int) -> np.ndarray:
    """The first n samples as an RGB sheet, TRIPLETS_PER_ROW triplets per row."""
    tiles = []
    for fields in read_samples(shards):
        if len(tiles) == n:
            break
        tiles.append(_triplet(fields))
    if not tiles:
        raise UserError("the shards hold no samples")
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % TRIPLETS_PER_ROW)
    rows = [np.hstack(tiles[i : i + TRIPLETS_PER_ROW]) for i in range(0, len(tiles), TRIPLETS_PER_ROW)]
    return np.vstack(rows)


def write_preview(shards: list[Path], out: Path, n: int) -> Path:
    sheet = contact_sheet(shards, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise UserError(f"could not write {out} (use a .png or .jpg name in a writable folder)")
    return out
