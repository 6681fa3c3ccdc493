"""Model shapes for every alignment/fusion, the alignment maths, K-shot and shared prompts."""

import dataclasses

import pytest
import torch
from make_data import tiny_model_config

from metauas.errors import UserError
from metauas.model.config import EncoderConfig, ModelConfig
from metauas.model.network import MetaUAS, align


@pytest.mark.parametrize("alignment", ["soft", "hard", "none"])
@pytest.mark.parametrize("fusion", ["cat", "add", "absdiff"])
def test_every_variant_gives_full_resolution_logits(alignment, fusion):
    model = MetaUAS(tiny_model_config(alignment=alignment, fusion=fusion))
    prompt, query = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    logits = model(prompt, query)
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.learnable_parameters())
    probs = model.predict(prompt, query)
    assert probs.shape == (2, 1, 64, 64) and 0 <= probs.min() and probs.max() <= 1


def test_non_square_and_odd_sizes_keep_the_query_resolution():
    model = MetaUAS(tiny_model_config())
    assert model(torch.rand(1, 3, 72, 100), torch.rand(1, 3, 72, 100)).shape == (1, 1, 72, 100)


def test_soft_alignment_is_a_convex_combination_of_prompt_features():
    torch.manual_seed(0)
    values = torch.randn(2, 5, 3, 4)  # B x C x h x w prompt features
    keys, query = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 2, 3)
    out = align(values, keys, query, "soft")
    sim = torch.einsum("bcn,bcm->bnm", query.flatten(2), keys.flatten(2))
    weights = sim.softmax(-1)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6))
    expected = torch.einsum("bnm,bcm->bcn", weights, values.flatten(2)).reshape(2, 5, 2, 3)
    torch.testing.assert_close(out, expected)
    # each output vector lies inside the per-channel range of the prompt's vectors
    lo = values.flatten(2).min(-1).values[..., None, None]
    hi = values.flatten(2).max(-1).values[..., None, None]
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)


def test_hard_alignment_picks_the_most_similar_prompt_position():
    torch.manual_seed(1)
    values, keys, query = torch.randn(1, 4, 3, 3), torch.randn(1, 8, 3, 3), torch.randn(1, 8, 2, 2)
    out = align(values, keys, query, "hard")
    for n in range(4):
        q = query.flatten(2)[0, :, n]
        best = int((keys.flatten(2)[0].T @ q).argmax())
        torch.testing.assert_close(out.flatten(2)[0, :, n], values.flatten(2)[0, :, best])


def test_identical_keys_make_soft_alignment_pick_the_same_position():
    values = torch.randn(1, 3, 4, 4)
    keys = torch.eye(16).reshape(1, 16, 4, 4) * 50  # position m has key e_m
    out = align(values, keys, keys, "soft")
    torch.testing.assert_close(out, values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [{}, {"discrepancy_stages": (1, 2), "lookup_residual": 8.0}])
def test_shared_prompt_and_k_shot_match_explicit_batches(options):
    model = MetaUAS(tiny_model_config(**options)).eval()
    prompt, queries = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        shared = model.segment(model.encode(prompt), model.encode(queries))
        explicit = model(prompt.expand(3, -1, -1, -1), queries)
        torch.testing.assert_close(shared, explicit, atol=1e-5, rtol=1e-5)
        one = model.encode(prompt)
        k_shot = model.segment([one, one], model.encode(queries))
        torch.testing.assert_close(k_shot, shared, atol=1e-5, rtol=1e-5)


def test_prompts_encoded_once_for_several_shots_of_each_query_match_explicit_batches():
    # train --consistency: B prompts, 2B queries (each query, then its second shot)
    model = MetaUAS(tiny_model_config(discrepancy_stages=(1, 2))).eval()
    prompts, queries = torch.rand(2, 3, 64, 64), torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        shared, aligned = model(prompts, queries, return_aligned=True)
        explicit, explicit_aligned = model(prompts.repeat(2, 1, 1, 1), queries, return_aligned=True)
    torch.testing.assert_close(shared, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aligned, explicit_aligned, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="3 queries do not split evenly over 2 prompts"):
        model(prompts, queries[:3])


def test_encoder_stays_frozen_in_train_mode():
    model = MetaUAS(tiny_model_config()).train()
    assert model.decoder.training and not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_config_round_trips_through_a_dict_and_rejects_unknown_values():
    cfg = tiny_model_config(alignment="hard", fusion="absdiff")
    assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    with pytest.raises(UserError, match="alignment"):
        ModelConfig(alignment="magic")
    with pytest.raises(UserError, match="fusion"):
        ModelConfig(fusion="mul")


def test_official_b4_layout_has_the_papers_learnable_parameter_count():
    cfg = ModelConfig(encoder=EncoderConfig("efficientnet_b4", "none", "official"), fusion="cat")
    counts = MetaUAS(cfg).parameter_counts()
    # the paper reports 4.6M learnable (alignment + decoder + head) with b4
    assert 4.5e6 < counts["learnable"] < 4.7e6
    assert counts["total"] > 20e6


def test_a_fresh_model_starts_near_the_change_prior_not_at_one_half():
    torch.manual_seed(0)
    model = MetaUAS(tiny_model_config()).eval()
    probs = model.predict(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert 0.01 < probs.mean().item() < 0.2


def test_hard_alignment_picks_the_most_similar_direction_cosine_not_dot():
    """Eq. 3: the matched prompt position maximises cosine; a long key pointing elsewhere
    wins the raw dot product (the old behaviour) but not the cosine."""
    keys = torch.tensor([[3.0, 3.0], [1.0, 0.05]]).T.reshape(1, 2, 1, 2)  # positions: long diagonal, short along x
    values = torch.tensor([[10.0, 20.0]]).reshape(1, 1, 1, 2)
    query = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    with torch.no_grad():
        assert align(values, keys, query, "hard", hard_similarity="cosine").item() == 20.0
        assert align(values, keys, query, "hard", hard_similarity="dot").item() == 10.0


def test_stored_configs_without_hard_similarity_keep_the_dot_product():
    from metauas.trainer.config import TrainConfig

    assert ModelConfig().hard_similarity == "cosine"
    old = ModelConfig().to_dict()
    del old["hard_similarity"]
    assert ModelConfig.from_dict(old).hard_similarity == "dot"
    run = TrainConfig(train="x", out="y").to_dict()
    del run["model"]["hard_similarity"]
    assert TrainConfig.from_dict(run).model.hard_similarity == "dot"
    assert ModelConfig.from_dict(ModelConfig().to_dict()).hard_similarity == "cosine"
    with pytest.raises(UserError, match="unknown hard similarity"):
        ModelConfig(hard_similarity="l2")


def test_an_old_hard_checkpoint_loads_with_its_dot_product(tmp_path):
    from metauas.model.checkpoint import load_model, read_checkpoint, save_checkpoint

    model = MetaUAS(tiny_model_config(alignment="hard"))
    path = save_checkpoint(tmp_path / "old.pt", model, size=64, step=0)
    payload = read_checkpoint(path)
    del payload["meta"]["config"]["hard_similarity"]  # as written before the field existed
    torch.save(payload, path)
    loaded, _ = load_model(path)
    assert loaded.cfg.hard_similarity == "dot" and loaded.alignments[0].hard_similarity == "dot"
