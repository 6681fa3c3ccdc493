"""Mask invariants of every change type, before and after encoding."""

from __future__ import annotations

import numpy as np
import pytest

from metauas.changegen.builtin import open_source
from metauas.changegen.changes import visible
from metauas.changegen.config import CHANGE_TYPES, GenerateConfig
from metauas.changegen.inpaint import make_inpainter
from metauas.changegen.pairs import Synthesizer
from metauas.changegen.shards import sample_members
from metauas.data.images import decode

SIZE = 64
N = 12


def synth_for(change: str, source: str = "builtin", **kw) -> Synthesizer:
    cfg = GenerateConfig(out=".", num_pairs=N, size=SIZE, source=source, change_weights={change: 1.0}, **kw)
    return Synthesizer(cfg, open_source(cfg), make_inpainter("opencv", None))


@pytest.fixture(scope="module")
def pairs_by_type() -> dict:
    return {c: synth_for(c).make(list(range(N))) for c in CHANGE_TYPES}


@pytest.mark.parametrize("change", CHANGE_TYPES)
def test_outside_mask_unchanged_inside_changed(pairs_by_type, change):
    for sample in pairs_by_type[change]:
        p = sample.pair
        assert p.change == change
        assert p.prompt.shape == p.query.shape == (SIZE, SIZE, 3) and p.mask.shape == (SIZE, SIZE)
        assert np.array_equal(p.prompt[~p.mask], p.query[~p.mask])
        if change == "none":
            assert not p.mask.any() and np.array_equal(p.prompt, p.query)
        else:
            diff = np.abs(p.prompt.astype(int) - p.query.astype(int)).max(axis=2)
            assert p.mask.sum() >= 16
            assert diff[p.mask].mean() >= 10, "near-invisible change was not redrawn"


def test_appear_is_the_disappear_pair_swapped(pairs_by_type):
    for d, a in zip(pairs_by_type["disappear"], pairs_by_type["appear"]):
        assert np.array_equal(d.pair.prompt, a.pair.query)
        assert np.array_equal(d.pair.query, a.pair.prompt)
        assert np.array_equal(d.pair.mask, a.pair.mask)


def test_visible_rejects_a_change_nobody_can_see(pairs_by_type):
    p = pairs_by_type["local"][0].pair
    faint = type(p)(
        p.prompt, np.clip(p.prompt.astype(int) + 2 * p.mask[..., None], 0, 255).astype(np.uint8), p.mask, "local"
    )
    assert not visible(faint)
    assert visible(p)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_invariants_survive_encoding(pairs_by_type, fmt):
    cfg = GenerateConfig(out=".", num_pairs=N, size=SIZE, image_format=fmt)
    for change in ("exchange", "none"):
        for sample in pairs_by_type[change][:4]:
            files = dict(sample_members(cfg, sample))
            key = f"{sample.index:09d}"
            prompt, query = decode(files[f"{key}.prompt.{fmt}"]), decode(files[f"{key}.query.{fmt}"])
            mask = decode(files[f"{key}.mask.png"], grey=True)
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask > 0, sample.pair.mask)
            outside = np.abs(prompt.astype(int) - query.astype(int))[mask == 0]
            if fmt == "png" or change == "none":
                assert outside.max(initial=0) == 0
            else:  # lossy codecs: outside, no more than the two images' codec noise
                codec_noise = np.abs(prompt.astype(int) - sample.pair.prompt.astype(int)).mean()
                assert outside.mean() <= 2 * codec_noise + 0.5


def test_folder_and_coco_sources_give_valid_changes(image_folder, coco_set):
    images, annotations = coco_set
    for change in ("disappear", "exchange"):
        for source, kw in (
            ("folder", {"images": image_folder}),
            ("coco", {"coco_images": images, "coco_annotations": annotations}),
        ):
            for sample in synth_for(change, source, **kw).make(list(range(4))):
                p = sample.pair
                assert sample.source["kind"] == source
                assert np.array_equal(p.prompt[~p.mask], p.query[~p.mask]) and p.mask.any()
