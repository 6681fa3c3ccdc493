"""The prompt-query discrepancy inputs (ModelConfig.discrepancy_stages / lookup_residual)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from make_data import tiny_model_config

from metauas.errors import UserError
from metauas.inference.lookup import stage_scores
from metauas.model.network import MetaUAS, ModelConfig, max_cosine_distance


def test_max_cosine_distance_is_the_lookups_one_image_patchcore():
    torch.manual_seed(0)
    prompt, query = torch.randn(1, 8, 6, 7), torch.randn(3, 8, 5, 4)
    ours = max_cosine_distance(query, [prompt])
    expected = stage_scores([prompt], query, 1)  # the baseline's, clipped at 1
    torch.testing.assert_close(ours.clamp(max=1), expected, atol=1e-5, rtol=0)
    # pooling is the lookup's neighbourhood
    torch.testing.assert_close(
        max_cosine_distance(query, [prompt], pool=3).clamp(max=1), stage_scores([prompt], query, 3), atol=1e-5, rtol=0
    )


def test_the_blocked_search_is_the_whole_products_maximum():
    """Blocks of query and prompt positions (uneven at the ends) give each row's maximum
    over all columns, as the whole similarity matrix would."""
    from metauas.model.network import best_similarity

    torch.manual_seed(2)
    queries, keys = torch.randn(2, 37, 8), torch.randn(2, 8, 23)
    whole = torch.bmm(queries, keys).amax(dim=2)
    torch.testing.assert_close(best_similarity(queries, keys), whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(best_similarity(queries, keys, 5, 4), whole, rtol=0, atol=1e-6)


def test_a_query_position_found_in_the_prompt_has_zero_discrepancy():
    torch.manual_seed(1)
    prompt = torch.randn(2, 8, 4, 4)
    query = prompt.flip(-1).clone()  # the same features, moved: all found
    query[:, :, 0, 0] = torch.randn(2, 8)  # one new feature
    d = max_cosine_distance(query, [prompt])
    assert d.shape == (2, 1, 4, 4)
    assert d[:, 0, 1:, :].abs().max() < 1e-5 and d[:, 0, 0, 1:].abs().max() < 1e-5
    assert (d[:, 0, 0, 0] > 0.05).all()
    # K prompts form one bank: adding a prompt can only lower the distance
    assert (max_cosine_distance(query, [prompt, torch.randn(2, 8, 3, 3)]) <= d + 1e-6).all()


@pytest.mark.parametrize("stages,residual", [((1, 2, 3), 0.0), ((0, 1), 0.0), ((1, 2, 3), 10.0), ((4,), 5.0)])
def test_discrepancy_model_shapes_and_gradients(stages, residual):
    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config(discrepancy_stages=stages, lookup_residual=residual))
    plain = MetaUAS(tiny_model_config(discrepancy_stages=()))
    extra = sum(p.numel() for p in model.learnable_parameters()) - sum(p.numel() for p in plain.learnable_parameters())
    assert extra > 0  # one more input channel per stage (and the residual gain)
    prompt, query = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    logits = model(prompt, query)
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.learnable_parameters())
    assert (model.residual_gain is not None) == (residual > 0)
    stages_in = model.fused_stages(*model.encode_pair(prompt, query))
    for s, (x, c) in enumerate(zip(stages_in, plain.fused_stages(*plain.encode_pair(prompt, query)))):
        assert x.shape[1] == c.shape[1] + (s in stages)


def test_residual_starts_from_the_lookup_ranking():
    """With a large initial gain the logits rank pixels as the mean discrepancy map does."""
    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config(discrepancy_stages=(1, 2), lookup_residual=1000.0)).eval()
    prompt, query = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pf, qf = model.encode_pair(prompt, query)
        prior = torch.stack(
            [
                F.interpolate(max_cosine_distance(qf[s], [pf[s]]), size=(64, 64), mode="bilinear", align_corners=False)
                for s in (1, 2)
            ]
        ).mean(0)
        logits = model(prompt, query)
    corr = torch.corrcoef(torch.stack([logits.flatten(), prior.flatten()]))[0, 1]
    assert corr > 0.99


def test_old_config_dicts_load_as_the_model_without_discrepancy():
    old = dataclasses.asdict(tiny_model_config(discrepancy_stages=()))
    for key in ("discrepancy_stages", "discrepancy_pool", "lookup_residual"):
        old.pop(key)
    cfg = ModelConfig.from_dict(old)
    assert cfg.discrepancy_stages == () and cfg.lookup_residual == 0.0
    model = MetaUAS(cfg)
    assert model.residual_gain is None
    new = tiny_model_config(discrepancy_stages=(1, 2, 3), discrepancy_pool=3, lookup_residual=4.0)
    assert ModelConfig.from_dict(dataclasses.asdict(new)) == new  # lists from JSON become tuples


@pytest.mark.parametrize(
    "kw",
    [
        {"discrepancy_stages": (5,)},
        {"discrepancy_stages": (1, 1)},
        {"discrepancy_pool": 2},
        {"discrepancy_stages": (), "lookup_residual": 3.0},
        {"discrepancy_stages": (1,), "lookup_residual": -1.0},
    ],
)
def test_bad_discrepancy_options_are_user_errors(kw):
    with pytest.raises(UserError):
        ModelConfig(**kw)
