"""The lookup baseline's options (docs/quality.md, "Lookup baseline"): each still finds a
planted defect, and each does what its docstring says on features built by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from make_data import defect, texture

from metauas.errors import UserError
from metauas.inference.config import LookupConfig
from metauas.inference.lookup import lookup_from_features, lookup_map, prompt_scale
from metauas.model.config import EncoderConfig
from metauas.model.encoder import build_encoder


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(EncoderConfig())  # offline ImageNet weights


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]


def _feats(seed: int, batch: int = 1, channels: int = 8) -> list[torch.Tensor]:
    """A hand-made five-stage feature list at strides 2..32 of a 64 px image."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, 64 // s, 64 // s, generator=g) for s in (2, 4, 8, 16, 32)]


OPTIONS = [
    {},  # the default
    {"stages": (1, 2, 3), "neighbourhood": 1, "sigma": 0.0, "upsample": "image"},  # plain PatchCore
    {"stages": (2, 3), "neighbourhood": (1, 3)},
    {"normalise": "prompt"},
    {"normalise": "query"},
    {"aggregate": "max"},
    {"aggregate": "geomean"},
    {"stages": (2, 3, 4), "aggregate": "geomean", "neighbourhood": 1},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_option_finds_the_planted_defect_and_not_the_copy(encoder, options):
    rng = np.random.default_rng(0)
    normal = texture(rng, (180, 150, 120))
    broken, mask = defect(texture(rng, (180, 150, 120)), rng)
    maps = lookup_map(encoder, _t(normal), torch.cat([_t(normal), _t(broken)]), LookupConfig(**options))
    assert maps.shape == (2, 1, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    # the prompt itself: every patch found exactly (up to float noise, which a query's own
    # median, itself noise here, stretches)
    assert float(maps[0].max()) < (1e-2 if options.get("normalise") == "query" else 1e-3)
    inside, outside = maps[1, 0][torch.from_numpy(mask > 0)], maps[1, 0][torch.from_numpy(mask == 0)]
    assert inside.mean() > 1.5 * outside.mean()
    assert float(maps[1, 0].flatten().argmax()) in set(np.flatnonzero(mask.ravel() > 0)) | set(
        np.flatnonzero(_dilate(mask).ravel() > 0)
    )  # the hottest pixel is on (or next to) the defect


def _dilate(mask: np.ndarray, r: int = 6) -> np.ndarray:
    import cv2

    return cv2.dilate(mask, np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def test_maps_depend_on_feature_directions_only():
    """Cosine lookup: scaling a stage's features (as another encoder or a brighter image
    might) changes nothing, with or without normalisation."""
    prompt, query = _feats(1), _feats(2, batch=2)
    for normalise in ("none", "prompt", "query"):
        cfg = LookupConfig(stages=(2, 3), normalise=normalise)
        base = lookup_from_features([prompt], query, (64, 64), cfg)
        scaled = lookup_from_features([[f * 7.5 for f in prompt]], [f * 0.2 for f in query], (64, 64), cfg)
        torch.testing.assert_close(scaled, base, atol=1e-5, rtol=1e-5)


def test_prompt_scale_leaves_out_only_each_patchs_own_neighbourhood():
    stage = _feats(3)[2]  # 8 x 8 random patches: every other patch is far
    far = prompt_scale([stage], k=1, exclude=1, quantile=0.5)
    assert far.shape == (1, 1, 1, 1) and 0.1 < float(far) < 1
    # a second identical shot is not the patch's neighbourhood: every patch finds its twin
    assert float(prompt_scale([stage, stage], k=1, exclude=1, quantile=0.5)) < 1e-3
    # a window covering the whole grid leaves only the other shot's patches
    other = _feats(4)[2]
    a, b = (torch.nn.functional.normalize(f, dim=1).flatten(2)[0] for f in (stage, other))
    cross = 1 - (a.T @ b)
    expected = torch.cat([cross.amin(1), cross.amin(0)]).clamp(0, 1).quantile(0.5)
    torch.testing.assert_close(prompt_scale([stage, other], 1, 8, 0.5).flatten()[0], expected)
    # a wider window can only push each patch's nearest match further away
    smooth = torch.nn.functional.avg_pool2d(_feats(5)[1], 5, stride=1, padding=2)  # neighbours alike
    scales = [float(prompt_scale([smooth], 1, e, 0.5)) for e in (0, 1, 3)]
    assert scales[0] < scales[1] < scales[2]


def test_prompt_normalisation_puts_a_normal_query_near_the_middle(encoder):
    """The prompt's own distances predict what a normal patch gets: an unseen normal
    sample of the texture scores around r = 1, i.e. 0.5, not near 0 or 1."""
    rng = np.random.default_rng(5)
    prompt, query = _t(texture(rng, (90, 140, 210))), _t(texture(rng, (90, 140, 210)))
    m = lookup_map(encoder, prompt, query, LookupConfig(normalise="prompt", sigma=0))
    assert 0.2 < float(m.median()) < 0.8


def test_query_normalisation_divides_each_stage_by_its_median():
    prompt, query = _feats(5), _feats(6)
    cfg = LookupConfig(stages=(3,), neighbourhood=1, sigma=0, normalise="query", upsample="image")
    m = lookup_from_features([prompt], query, (4, 4), cfg)  # stage 3 is 4 x 4: no resampling
    r = m / (1 - m)
    torch.testing.assert_close(r.median(), torch.tensor(1.0), atol=1e-5, rtol=1e-5)


def test_per_stage_windows_and_mean_at_image_size_are_the_mean_of_single_stage_maps():
    prompt, query = _feats(7), _feats(8, batch=2)
    one = {"sigma": 0.0, "upsample": "image"}
    both = lookup_from_features([prompt], query, (64, 64), LookupConfig(stages=(2, 3), neighbourhood=(1, 3), **one))
    s2 = lookup_from_features([prompt], query, (64, 64), LookupConfig(stages=(2,), neighbourhood=1, **one))
    s3 = lookup_from_features([prompt], query, (64, 64), LookupConfig(stages=(3,), neighbourhood=3, **one))
    torch.testing.assert_close(both, (s2 + s3) / 2)
    assert not torch.allclose(
        s3, lookup_from_features([prompt], query, (64, 64), LookupConfig(stages=(3,), neighbourhood=1, **one))
    )


def test_aggregations_are_ordered_max_mean_geomean():
    prompt, query = _feats(9), _feats(10, batch=2)
    maps = {
        a: lookup_from_features(
            [prompt],
            query,
            (64, 64),
            LookupConfig(stages=(1, 2, 3), neighbourhood=1, sigma=0, upsample="image", aggregate=a),
        )
        for a in ("max", "mean", "geomean")
    }
    assert bool((maps["max"] >= maps["mean"] - 1e-6).all()) and bool((maps["mean"] >= maps["geomean"] - 1e-6).all())
    assert not torch.allclose(maps["max"], maps["geomean"])


def test_one_stage_upsamples_the_same_either_way():
    prompt, query = _feats(11), _feats(12)
    finest, image = (
        lookup_from_features([prompt], query, (64, 64), LookupConfig(stages=(2,), upsample=u))
        for u in ("finest", "image")
    )
    torch.testing.assert_close(finest, image)


def test_k_shots_still_only_lower_distances_with_every_option():
    prompt, extra, query = _feats(13), _feats(14), _feats(15, batch=2)
    for options in OPTIONS:
        if options.get("normalise", "none") != "none":
            continue  # a larger dictionary also moves the scale: only the raw distances are monotone
        cfg = LookupConfig(**options)
        one = lookup_from_features([prompt], query, (64, 64), cfg)
        two = lookup_from_features([prompt, extra], query, (64, 64), cfg)
        assert bool((two <= one + 1e-6).all())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"normalise": "zscore"}, "normalise"),
        ({"aggregate": "sum"}, "aggregate"),
        ({"upsample": "nearest"}, "upsample"),
        ({"neighbourhood": 2}, "neighbourhood"),
        ({"stages": (2, 3), "neighbourhood": (1, 3, 5)}, "neighbourhood"),
        ({"stages": ()}, "stage"),
        ({"quantile": 0.0}, "quantile"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        LookupConfig(**options)
