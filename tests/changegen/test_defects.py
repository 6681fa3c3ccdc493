"""Small and thin `local` masks (defects.py): advertised sizes and shapes, exact masks,
determinism per (seed, index), and the default (DRAEM's Perlin only) left as it was."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.morphology import skeletonize

from metauas.changegen.builtin import open_source
from metauas.changegen.config import GenerateConfig, parse_local_masks
from metauas.changegen.defects import MASKS, blob_mask, intensity_fill, stain_mask, stroke_mask
from metauas.changegen.inpaint import make_inpainter
from metauas.changegen.pairs import Synthesizer
from metauas.errors import UserError

SIZE = 128


def masks(fn, n=40, size=SIZE):
    return [fn(np.random.default_rng([7, i]), size)[0] for i in range(n)]


def components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_blob_is_one_small_component():
    for m in masks(blob_mask):
        area = m.mean()
        # diameter <= 12% of the side, aspect <= 2.5, rim noise <= 40%: well under 3% of the image
        assert 0 < area < 0.03
        assert components(m) <= 2  # a rough rim may pinch off a crumb, rarely


def test_stroke_is_thin_and_long():
    for m in masks(stroke_mask):
        assert m.any()
        ys, xs = np.nonzero(m)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        # mean width in px as docs/quality.md measures it; OpenCV draws thickness t about
        # t + 1 wide, and a diagonal's skeleton has 1/sqrt(2) pixels per unit length
        width = m.sum() / max(1, skeletonize(m).sum())
        assert extent >= 0.1 * SIZE  # 15-60% of the side long (a turning polyline spans less)
        assert 0.5 <= width <= (round(0.035 * SIZE) + 1) * np.sqrt(2) + 1
        assert m.mean() < 0.05


def test_stain_stays_inside_a_small_ellipse():
    for m in masks(stain_mask):
        if not m.any():
            continue  # a sparse draw; `local` redraws empty masks
        ys, xs = np.nonzero(m)
        # diameter <= 30% of the side and aspect <= 2: the long axis is <= 0.3 * sqrt(2) of it
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) <= 0.3 * np.sqrt(2) * SIZE + 2
        assert m.mean() < 0.07


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_masks_are_deterministic_per_rng(kind):
    a, pa = MASKS[kind](np.random.default_rng([3, 5]), 96)
    b, pb = MASKS[kind](np.random.default_rng([3, 5]), 96)
    assert np.array_equal(a, b) and pa == pb and a.shape == (96, 96) and a.dtype == bool


def test_intensity_fill_changes_only_the_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 10:40] = True
    query, params = intensity_fill(image, mask, rng)
    assert np.array_equal(query[~mask], image[~mask])
    assert np.abs(query[mask].astype(int) - image[mask].astype(int)).mean() > 10
    assert params["kind"] == "intensity"


def synth(**kw) -> Synthesizer:
    cfg = GenerateConfig(out=".", num_pairs=16, size=SIZE, change_weights={"local": 1.0}, **kw)
    return Synthesizer(cfg, open_source(cfg), make_inpainter("opencv", None))


def test_local_pairs_with_small_kinds_are_exact_and_deterministic():
    kinds = {"blob": 1.0, "stroke": 1.0, "stain": 1.0}
    first = synth(local_masks=kinds).make(list(range(16)))
    again = synth(local_masks=kinds).make(list(range(16)))
    seen = set()
    for a, b in zip(first, again):
        p = a.pair
        assert p.change == "local" and np.array_equal(p.prompt[~p.mask], p.query[~p.mask])
        assert p.mask.mean() < 0.07  # small, unlike DRAEM's regions
        assert np.array_equal(p.query, b.pair.query) and np.array_equal(p.mask, b.pair.mask)
        assert p.params == b.pair.params
        seen.add(p.params["mask"]["kind"])
    assert seen == set(kinds)


def test_default_is_perlin_only_and_leaves_the_recorded_config_unchanged():
    cfg = GenerateConfig(out=".", num_pairs=4)
    assert cfg.local_masks == {"perlin": 1.0}
    assert "local_masks" not in cfg.dataset_fields() and "local_intensity" not in cfg.dataset_fields()
    assert GenerateConfig(out=".", num_pairs=4, local_masks={"blob": 1.0}).dataset_fields()["local_masks"] == {
        "blob": 1.0
    }
    pairs = synth().make(list(range(4)))
    assert all("perlin" in s.pair.params and "mask" not in s.pair.params for s in pairs)


def test_parse_local_masks():
    assert parse_local_masks("perlin=1, stroke=0.5,blob=0") == {"perlin": 1.0, "stroke": 0.5}
    for bad in ("scratch=1", "blob", "blob=x", "blob=0"):
        with pytest.raises(UserError):
            parse_local_masks(bad)
    with pytest.raises(UserError):
        GenerateConfig(out=".", num_pairs=1, local_intensity=1.5)
