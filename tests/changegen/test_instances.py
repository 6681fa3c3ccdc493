"""Instance prompts (`--instance-prompts`): a scene's local or none pair takes its prompt from
another instance of the scene's kind (same materials, another layout), as a real normal is
another part; the mask still marks only the change, and datasets made without the option
keep their bytes."""

from __future__ import annotations

import numpy as np
import pytest

from metauas.changegen.builtin import open_source
from metauas.changegen.config import GenerateConfig
from metauas.changegen.inpaint import make_inpainter
from metauas.changegen.pairs import Synthesizer
from metauas.changegen.scenes import render_instance, scene_style
from metauas.errors import UserError

SIZE = 96


def synth(**kw) -> Synthesizer:
    cfg = GenerateConfig(out=".", num_pairs=24, size=SIZE, **kw)
    return Synthesizer(cfg, open_source(cfg), make_inpainter("opencv", None))


def test_instances_of_one_style_share_materials_not_layout():
    style = scene_style(np.random.default_rng(4), SIZE)
    a, b = (render_instance(style, np.random.default_rng(s), SIZE) for s in (1, 2))
    assert a.shape == b.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).mean() > 2  # not the same picture shifted by nothing
    # the same materials: colour statistics of two instances agree far better than two styles'
    other = render_instance(scene_style(np.random.default_rng(5), SIZE), np.random.default_rng(1), SIZE)
    same = np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).max()
    assert same < np.abs(a.reshape(-1, 3).mean(0) - other.reshape(-1, 3).mean(0)).max()


def test_scene_pairs_take_another_instance_as_prompt():
    samples = synth(
        change_weights={"local": 1.0, "none": 1.0}, instance_prompts=1.0, local_masks={"blob": 1.0, "stroke": 1.0}
    ).make(list(range(24)))
    instance = [s for s in samples if s.pair.params.get("prompt") == "instance"]
    assert instance and all(s.source["kind"] == "scene" and s.source["instance"] for s in instance)
    assert all(s.source["kind"] != "scene" for s in samples if s not in instance)  # photos keep their own
    for s in instance:
        p = s.pair
        outside = ~p.mask
        assert np.abs(p.prompt[outside].astype(int) - p.query[outside]).mean() > 2  # a different part
        if p.change == "none":
            assert not p.mask.any()
        else:
            assert p.mask.any() and p.mask.mean() < 0.1  # only the small defect is a change
    again = synth(
        change_weights={"local": 1.0, "none": 1.0}, instance_prompts=1.0, local_masks={"blob": 1.0, "stroke": 1.0}
    ).make(list(range(24)))
    assert all(
        np.array_equal(a.pair.prompt, b.pair.prompt) and np.array_equal(a.pair.mask, b.pair.mask)
        for a, b in zip(samples, again)
    )


def test_off_by_default_and_unrecorded():
    cfg = GenerateConfig(out=".", num_pairs=4)
    assert cfg.instance_prompts == 0.0 and "instance_prompts" not in cfg.dataset_fields()
    pairs = synth(change_weights={"local": 1.0, "none": 1.0}).make(list(range(8)))
    assert not any(s.pair.params.get("prompt") for s in pairs)
    with pytest.raises(UserError, match="instance_prompts"):
        GenerateConfig(out=".", num_pairs=1, instance_prompts=1.5)
