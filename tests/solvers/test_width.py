"""Width solver math against direct computations and closed forms."""
import math

import pytest
import torch

from prunekit.solvers.width import (admm_reform, attention_unit_scores, closed_form_reform, importance, mutate_mask,
                                    resize_mask, top_mask)


def _xh(n_in, tokens=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n_in, generator=g, dtype=torch.float64) @ torch.randn(n_in, n_in, generator=g, dtype=torch.float64)
    return x, x.T @ x


def test_importance_equals_direct_elementwise_computation():
    x, h = _xh(6)
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows, cols = importance(w, h, percdamp=0.01)
    h2 = 2 * h
    inv = torch.linalg.inv(h2 + 0.01 * h2.diagonal().mean() * torch.eye(6, dtype=torch.float64))
    phi = [[w[i, j].item() ** 2 / inv[j, j].item() for j in range(6)] for i in range(4)]
    assert rows.tolist() == pytest.approx([sum(r) for r in phi], rel=1e-9)
    assert cols.tolist() == pytest.approx([sum(phi[i][j] for i in range(4)) for j in range(6)], rel=1e-9)


def test_attention_units_pair_rotary_dims_and_group_query_heads():
    heads, kv, hd = 4, 2, 4          # two query heads per KV head; rotary pairs (0,2), (1,3)
    q = torch.arange(heads * hd, dtype=torch.float64)
    k = torch.arange(kv * hd, dtype=torch.float64) * 100
    v = torch.zeros(kv * hd, dtype=torch.float64)
    o = torch.ones(heads * hd, dtype=torch.float64)
    s = attention_unit_scores(q, k, v, o, heads, kv, hd)
    # unit (g=1, p=0): q heads 2,3 dims 0 and 2 -> 8+10+12+14; k head 1 dims 0,2 -> (4+6)*100; o: 4 ones
    assert s.shape == (2, 2)
    assert s[1, 0].item() == 8 + 10 + 12 + 14 + 1000 + 4


def test_mutated_mask_keeps_ratio_and_similarity():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(100, generator=g)
    mask = top_mask(scores, 40)
    for keep in (40, 30, 55):
        for _ in range(20):
            m = mutate_mask(mask, keep, prob=1.0, alpha=0.8, gen=g, scores=scores)
            assert int(m.sum()) == keep
            base = resize_mask(mask, keep, scores)
            assert int((m & base).sum()) >= math.ceil(0.8 * keep)
    same = mutate_mask(mask, 40, prob=0.0, alpha=0.8, gen=g, scores=scores)
    assert torch.equal(same, mask)


def test_resize_mask_by_rank():
    scores = torch.tensor([5.0, 1.0, 4.0, 3.0, 2.0])
    m = torch.tensor([True, True, False, False, False])
    assert resize_mask(m, 1, scores).tolist() == [True, False, False, False, False]
    assert resize_mask(m, 3, scores).tolist() == [True, True, True, False, False]


def test_admm_converges_to_the_closed_form():
    x, h = _xh(12, seed=3)
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    omit = torch.zeros(12, dtype=torch.bool)
    omit[[1, 4, 5, 9]] = True
    exact = closed_form_reform(w, h, omit)
    z, res = admm_reform(w, h, omit, rho=1.0, iters=200)
    assert torch.all(z[:, omit] == 0)
    assert (z - exact).norm() / exact.norm() < 1e-3
    # the closed form is the constrained least-squares optimum: brute force via lstsq on kept columns
    keep = ~omit
    sol = torch.linalg.lstsq(x[:, keep], x @ w.T).solution.T
    assert torch.allclose(exact[:, keep], sol, atol=1e-8)
    # and it beats simply masking
    err = lambda m: (x @ (w - m).T).norm()
    masked = w.clone()
    masked[:, omit] = 0
    assert err(exact) < err(masked)
