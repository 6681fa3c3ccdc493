"""Issue 6 model options: sparsemax / top-k normalisers, learned temperature, joint K-shot
dictionaries, discrepancy fusions, aligned features for losses, old configs loading."""

import pytest
import torch
from make_data import tiny_model_config

from metauas.errors import UserError
from metauas.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from metauas.model.config import ModelConfig
from metauas.model.network import MetaUAS, align, dictionary, fuse, fused_channels, sparsemax, topk_softmax


def test_sparsemax_matches_the_closed_form_sums_to_one_and_is_sparse():
    out = sparsemax(torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.0, 0.0]]))
    # support {1, 0.5}: tau = (1.5 - 1) / 2 = 0.25; equal inputs share the mass
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    torch.manual_seed(0)
    x = torch.randn(4, 7, 50) * 3
    p = sparsemax(x)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 7))
    assert p.min() >= 0 and (p == 0).float().mean() > 0.5  # most prompt positions get nothing
    assert sparsemax(x * 1000).max(-1).values.min() == 1  # far-apart scores: one-hot
    assert sparsemax(x.half()).dtype == torch.half


def test_sparsemax_gradient_is_the_analytic_jacobian():
    x = torch.tensor([0.9, 0.4, 0.3, -2.0], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(sparsemax, x)
    s = (sparsemax(x) > 0).double()  # support
    expected = torch.diag(s) - torch.outer(s, s) / s.sum()
    torch.testing.assert_close(jac, expected)


def test_topk_softmax_keeps_exactly_k_entries():
    torch.manual_seed(1)
    x = torch.randn(3, 20)
    p = topk_softmax(x, 4)
    assert ((p > 0).sum(-1) == 4).all()
    top = x.topk(4, dim=-1)
    torch.testing.assert_close(p.gather(-1, top.indices), top.values.softmax(-1))
    torch.testing.assert_close(topk_softmax(x, 50), x.softmax(-1))  # k beyond M: plain softmax


@pytest.mark.parametrize("mode", ["sparsemax", "topk"])
def test_sparse_alignments_are_convex_combinations(mode):
    torch.manual_seed(2)
    values, keys, query = torch.randn(2, 5, 4, 4), torch.randn(2, 6, 4, 4), torch.randn(2, 6, 3, 3)
    out = align(values, keys, query, mode, scale=True, topk=3)
    lo = values.flatten(2).min(-1).values[..., None, None]
    hi = values.flatten(2).max(-1).values[..., None, None]
    assert out.shape == (2, 5, 3, 3)
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)


@pytest.mark.parametrize("mode", ["soft", "sparsemax", "topk", "hard"])
def test_a_joint_dictionary_of_identical_prompts_equals_one_prompt(mode):
    torch.manual_seed(3)
    values, keys, query = torch.randn(1, 5, 4, 4), torch.randn(1, 6, 4, 4), torch.randn(3, 6, 3, 3)
    one = align(values, keys, query, mode, scale=True, topk=3)
    joint = align(dictionary([values] * 3), dictionary([keys] * 3), query, mode, scale=True, topk=3, shots=3)
    torch.testing.assert_close(joint, one, atol=1e-5, rtol=1e-5)
    if mode == "sparsemax":  # the case is not the trivial one-hot one
        sim = torch.einsum("bcn,bcm->bnm", query.flatten(2), keys.flatten(2)) * 6**-0.5
        assert ((sparsemax(sim) > 0).sum(-1) > 1).any()


@pytest.mark.parametrize("alignment", ["soft", "sparsemax", "topk", "hard", "none"])
def test_joint_k_shot_model_equals_one_shot_for_identical_prompts(alignment):
    model = MetaUAS(tiny_model_config(alignment=alignment, scale_similarity=True, topk=4)).eval()
    prompt, queries = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        one, qf = model.encode(prompt), model.encode(queries)
        single = model.segment(one, qf)
        joint = model.segment([one, one, one], qf, joint=True)
        torch.testing.assert_close(joint, single, atol=1e-5, rtol=1e-5)
        # the batch-1 prompts are shared by all queries exactly as an explicit batch
        explicit = [f.expand(3, -1, -1, -1) for f in one]
        torch.testing.assert_close(model.segment([explicit, one], qf, joint=True), single, atol=1e-5, rtol=1e-5)


def test_joint_and_averaged_k_shot_differ_for_different_prompts():
    model = MetaUAS(tiny_model_config()).eval()
    prompts, query = torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        shots = [model.encode(prompts[i : i + 1]) for i in range(2)]
        qf = model.encode(query)
        assert model.segment(shots, qf, joint=True).shape == (1, 1, 64, 64)
        joint, averaged = model.aligned_pairs(shots, qf, joint=True), model.aligned_pairs(shots, qf)
    for (_, j), (_, a) in zip(joint, averaged):
        assert j.shape == a.shape and not torch.allclose(j, a, atol=1e-3)


@pytest.mark.parametrize(
    "alignment, fusion",
    [
        ("sparsemax", "cat"),
        ("topk", "cat"),
        ("soft", "cat+absdiff"),
        ("hard", "cat+cos"),
        ("sparsemax", "cat+absdiff+cos"),
        ("none", "cat+cos"),
    ],
)
def test_new_variants_give_full_resolution_logits_and_train_everything(alignment, fusion):
    model = MetaUAS(tiny_model_config(alignment=alignment, fusion=fusion, learn_temperature=True))
    logits = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in model.learnable_parameters())


def test_discrepancy_fusions_add_absdiff_and_cosine_channels():
    q, p = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    out = fuse(q, p, "cat+absdiff+cos")
    assert out.shape == (2, 13, 3, 3) and fused_channels(4, "cat+absdiff+cos") == 13
    torch.testing.assert_close(out[:, :4], q)
    torch.testing.assert_close(out[:, 4:8], p)
    torch.testing.assert_close(out[:, 8:12], (q - p).abs())
    cos = (q * p).sum(1) / (q.norm(dim=1) * p.norm(dim=1))
    torch.testing.assert_close(out[:, 12], 1 - cos)
    assert [fused_channels(4, m) for m in ("cat", "add", "absdiff", "cat+cos")] == [8, 4, 4, 9]
    assert fuse(q, q, "cat+cos")[:, 8].abs().max() < 1e-5  # identical features: distance 0


def test_learned_temperature_is_one_per_stage_starts_at_one_and_sharpens_the_lookup():
    model = MetaUAS(tiny_model_config(learn_temperature=True)).eval()
    temps = [m.log_temperature for m in model.alignments]
    assert len(temps) == 3 and all(t.item() == 0 for t in temps)
    assert all(m.log_temperature is None for m in MetaUAS(tiny_model_config()).alignments)
    g = torch.Generator().manual_seed(0)
    prompt, query = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    plain = MetaUAS(tiny_model_config()).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(prompt, query), plain(prompt, query))  # temperature 1
        for t in temps:
            t.fill_(2.0)
        # aligned prompt features change (the tiny random decoder may hide it in the logits;
        # a stage whose softmax is already one-hot keeps its features)
        _, hot = model(prompt, query, return_aligned=True)
        _, cold = plain(prompt, query, return_aligned=True)
        assert any(not torch.allclose(a, b) for (_, a), (_, b) in zip(hot, cold))  # (a one-hot stage stays)


def test_return_aligned_gives_the_same_logits_and_each_stages_features():
    model = MetaUAS(tiny_model_config()).eval()
    prompt, query = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, pairs = model(prompt, query, return_aligned=True)
        torch.testing.assert_close(logits, model(prompt, query))
        qf = model.encode(query)
    assert len(pairs) == 3
    for (q, aligned), feat in zip(pairs, qf[-3:]):
        torch.testing.assert_close(q, feat, atol=1e-5, rtol=1e-5)
        assert aligned.shape == feat.shape


def test_config_validates_new_fields_and_old_configs_load_with_defaults(tmp_path):
    with pytest.raises(UserError, match="topk"):
        ModelConfig(alignment="topk", topk=0)
    with pytest.raises(UserError, match="sparsemax"):  # the message lists the choices
        ModelConfig(alignment="magic")
    with pytest.raises(UserError, match="cat\\+cos"):
        ModelConfig(fusion="cat+mul")
    cfg = tiny_model_config(alignment="topk", topk=3, fusion="cat+cos", learn_temperature=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg

    # a checkpoint written before these fields existed
    old = MetaUAS(tiny_model_config())
    path = save_checkpoint(tmp_path / "old.pt", old, size=64, step=1)
    payload = read_checkpoint(path)
    for key in ("topk", "learn_temperature"):
        del payload["meta"]["config"][key]
    torch.save(payload, path)
    model, _ = load_model(path)
    assert model.cfg == tiny_model_config() and model.cfg.topk == 8 and not model.cfg.learn_temperature
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model(x, x), old.eval()(x, x))
