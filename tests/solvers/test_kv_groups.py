"""Merging KV heads: the fits are the least-squares solutions they claim to be, equal heads merge
exactly, and the expanded rows are what the smaller attention computes."""
import torch

from prunekit.solvers import kv_groups as kvg


def test_equal_heads_merge_exactly():
    g = torch.Generator().manual_seed(0)
    head = torch.randn(1, 8, 16, generator=g, dtype=torch.float64)
    w = head.repeat(4, 1, 1)                        # four equal old heads -> two new ones
    weights = torch.rand(4, 8, generator=g, dtype=torch.float64)
    a = kvg.value_weights(torch.randn(16, 8 * 8, generator=g, dtype=torch.float64), heads=8, kv=4)
    for merged in (kvg.merge_keys(w, 2), kvg.merge_keys(w, 2, weights), kvg.merge_values(w, 2, a)):
        assert torch.allclose(merged, head.repeat(2, 1, 1), atol=1e-10)
    assert torch.allclose(kvg.expand(kvg.merge_keys(w, 2), 4), w.reshape(32, 16), atol=1e-12)


def test_weighted_key_merge_is_the_weighted_least_squares_row():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, 10, generator=g, dtype=torch.float64)
    c = torch.rand(4, 6, generator=g, dtype=torch.float64)
    merged = kvg.merge_keys(w, 1, c)
    # brute force: each dim's row minimises sum_g c_g ||x - w_g||^2, by lstsq on the stacked system
    for dim in range(6):
        a = torch.cat([c[h, dim].sqrt() * torch.eye(10, dtype=torch.float64) for h in range(4)])
        b = torch.cat([c[h, dim].sqrt() * w[h, dim] for h in range(4)])
        assert torch.allclose(merged[0, dim], torch.linalg.lstsq(a, b).solution, atol=1e-8)


def test_value_merge_minimises_the_error_through_o_proj():
    g = torch.Generator().manual_seed(2)
    heads, kv, d, hidden = 4, 2, 5, 7
    w = torch.randn(kv, d, hidden, generator=g, dtype=torch.float64)
    o = torch.randn(hidden, heads * d, generator=g, dtype=torch.float64)
    merged = kvg.merge_values(w, 1, kvg.value_weights(o, heads, kv), damp=0.0)[0]
    # brute force: x minimises sum over query heads i of ||W_o,i (x - w_{g(i)})||^2, column by column
    per_head = [o[:, i * d:(i + 1) * d] for i in range(heads)]
    a = torch.cat(per_head)
    for col in range(hidden):
        b = torch.cat([per_head[i] @ w[i // (heads // kv), :, col] for i in range(heads)])
        assert torch.allclose(merged[:, col], torch.linalg.lstsq(a, b).solution, atol=1e-8)


def test_key_weights_average_each_rotary_pair():
    e = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(6, 4)      # 6 query heads, d = 4
    w = kvg.key_weights(e, kv=2, rotary=True)
    group = e.reshape(2, 3, 4).sum(1)
    assert torch.allclose(w[:, 0], (group[:, 0] + group[:, 2]) / 2) and torch.allclose(w[:, 0], w[:, 2])
    assert torch.equal(kvg.key_weights(e, kv=2, rotary=False), group)
