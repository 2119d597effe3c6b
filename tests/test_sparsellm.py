"""SparseLLM: its updates against brute force and direct solves, T=1 equal to SparseGPT, both FFN forms."""
import pytest
import torch
import torch.nn.functional as F

import prunekit
from prunekit import SparseGPTConfig, SparseLLMConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.solvers import sparsellm as S

from .conftest import VOCAB, make_tiny_model


def _ids(n=4, L=32):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fam", ["llama", "opt"])
@pytest.mark.parametrize("pattern,sparsity", [(None, 0.7), ("2:4", None)])
def test_one_iteration_equals_sparsegpt(fam, pattern, sparsity):
    a, b = make_tiny_model(fam), make_tiny_model(fam)
    prunekit.prune(a, SparseLLMConfig(sparsity=sparsity, pattern=pattern, iterations=1), _ids(), progress=False)
    prunekit.prune(b, SparseGPTConfig(sparsity=sparsity, pattern=pattern), _ids(), progress=False)
    for (n, la), (_, lb) in zip(ModelAdapter(a).all_linears(), ModelAdapter(b).all_linears()):
        assert torch.equal(la.weight, lb.weight), n


def test_z_relu_update_is_the_elementwise_minimum():
    g = torch.Generator().manual_seed(1)
    p, m = torch.randn(200, generator=g) * 2, torch.randn(200, generator=g) * 2
    alpha, gamma = 0.3, 0.7
    z = S.update_z_relu(p, m, alpha, gamma)
    grid = torch.linspace(-8, 8, 160001, dtype=torch.float64).unsqueeze(0)
    p, m, z = p.double().unsqueeze(1), m.double().unsqueeze(1), z.double().unsqueeze(1)
    best = (gamma * (p - F.relu(grid)) ** 2 + alpha * (grid - m) ** 2).min(dim=1).values
    got = (gamma * (p - F.relu(z)) ** 2 + alpha * (z - m) ** 2).squeeze(1)
    assert (got <= best + 1e-6).all()


def test_z_swiglu_update_is_the_elementwise_minimum():
    g = torch.Generator().manual_seed(2)
    p, m, s = (torch.randn(100, generator=g) for _ in range(3))
    z = S.update_z_swiglu(p, m, s, 5.0, 5.0)
    grid = torch.linspace(-10, 10, 200001, dtype=torch.float64).unsqueeze(0)
    a = F.silu(s).double().unsqueeze(1)
    p, m, z = p.double().unsqueeze(1), m.double().unsqueeze(1), z.double().unsqueeze(1)
    best = (5 * (grid - m) ** 2 + 5 * (p - a * grid) ** 2).min(dim=1).values
    got = (5 * (z - m) ** 2 + 5 * (p - a * z) ** 2).squeeze(1)
    assert (got <= best + 1e-5).all() and (got >= best - 1e-3).all()


def test_p_update_equals_direct_least_squares():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 10, generator=g, dtype=torch.float64)       # down: [d=6, f=10]
    Y, A = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g, dtype=torch.float64)
    beta, gamma = 2.0, 0.5
    p = S.update_p(W, Y, A, beta, gamma)
    for t in range(5):   # stack [sqrt(b) W; sqrt(g) I] p = [sqrt(b) y; sqrt(g) a]
        lhs = torch.cat([beta ** 0.5 * W, gamma ** 0.5 * torch.eye(10, dtype=torch.float64)])
        rhs = torch.cat([beta ** 0.5 * Y[t], gamma ** 0.5 * A[t]])
        direct = torch.linalg.lstsq(lhs, rhs.unsqueeze(1)).solution.squeeze(1)
        assert torch.allclose(p[t], direct, atol=1e-10)


def test_ridge_fit_approaches_least_squares():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(300, 8, generator=g, dtype=torch.float64)
    W_true = torch.randn(5, 8, generator=g, dtype=torch.float64)
    B = A @ W_true.T
    assert torch.allclose(S.ridge_fit(A, B, 1e-12), W_true, atol=1e-8)


def test_s_update_lowers_its_objective():
    g = torch.Generator().manual_seed(5)
    s, m, z, p = (torch.randn(2500, 7, generator=g) for _ in range(4))
    obj = lambda s: 5 * ((s - m) ** 2).sum() + 5 * ((p - F.silu(s) * z) ** 2).sum()
    assert obj(S.update_s_swiglu(s, m, z, p, 5.0, 5.0)) < obj(s)


@pytest.mark.parametrize("fam", ["llama", "opt"])
def test_both_ffn_forms_give_exact_sparsity_and_history(fam):
    model = make_tiny_model(fam)
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.75, iterations=3), _ids(), progress=False)
    for name, lin in ModelAdapter(model).all_linears():   # in_features <= blocksize: one block, exact count
        assert (lin.weight == 0).sum().item() == round(0.75 * lin.weight.numel()), name
    hist = res.details["ffn_relative_error"]
    assert sorted(hist) == ["0", "1", "2"] and all(len(v) == 3 for v in hist.values())
    model = make_tiny_model(fam)
    res = prunekit.prune(model, SparseLLMConfig(pattern="1:4", iterations=2), _ids(), progress=False)
    for name, lin in ModelAdapter(model).all_linears():
        assert (torch.count_nonzero(lin.weight.reshape(lin.out_features, -1, 4), dim=-1) == 1).all(), name


def test_layers_restricts_pruning_to_first_half():
    model, ref = make_tiny_model("llama"), make_tiny_model("llama")
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.5, iterations=2, layers="first-half"), _ids(), progress=False)
    adapter, ref_adapter = ModelAdapter(model), ModelAdapter(ref)
    assert sorted(res.details["ffn_relative_error"]) == ["0"]          # 3 blocks: the first half is block 0
    for (n, a), (_, b) in zip(adapter.all_linears([1, 2]), ref_adapter.all_linears([1, 2])):
        assert torch.equal(a.weight, b.weight), n
    assert res.sparsity["overall"] == pytest.approx(0.5, abs=0.01)


def test_edges_rule_runs_one_iteration_there():
    model = make_tiny_model("llama")   # 3 blocks: edges are 1, 1, 2
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.5, iterations=3, plain_blocks="edges"), _ids(), progress=False)
    assert [len(res.details["ffn_relative_error"][k]) for k in "012"] == [3, 1, 1]


def test_reference_s_step_diverges_on_large_activations_and_the_safe_step_does_not():
    g = torch.Generator().manual_seed(6)
    s, m = torch.randn(3000, 4, generator=g), torch.randn(3000, 4, generator=g)
    z = torch.randn(3000, 4, generator=g) * 100            # massive activations
    p = F.silu(m) * z + torch.randn(3000, 4, generator=g)
    per_elem = lambda s: S.s_objective(s, m, z, p, 5.0, 5.0)
    ref = S.update_s_swiglu(s, m, z, p, 5.0, 5.0, safeguard=False)
    safe = S.update_s_swiglu(s, m, z, p, 5.0, 5.0, safeguard=True)
    assert per_elem(ref).sum() > 10 * per_elem(s).sum()     # the fixed step overshoots
    assert (per_elem(safe) <= per_elem(s) + 1e-3).all()      # never worse, element by element
    assert per_elem(safe).sum() < per_elem(s).sum()
    # on ordinary activations the two steps agree (bar the rare element where a plain step would go uphill)
    z1 = torch.randn(3000, 4, generator=g) * 0.5
    a = S.update_s_swiglu(s, m, z1, p * 0.005, 5.0, 5.0, safeguard=False)
    b = S.update_s_swiglu(s, m, z1, p * 0.005, 5.0, 5.0, safeguard=True)
    assert ((a - b).abs() < 1e-7).float().mean() > 0.999 and (a - b).abs().max() < 1e-3
