"""Masks and scores against brute force on small matrices."""
import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.solvers.masks import nm_mask, parse_pattern, sparsity_mask
from prunekit.solvers.scores import magnitude_score, wanda_score
from prunekit.solvers.stats import InputSquaredNorm


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(None) is None
    for bad in ("4:4", "5:4", "0:4", "2-4", "a:b"):
        with pytest.raises(PrunekitError):
            parse_pattern(bad)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77])
def test_magnitude_keeps_exact_count_per_layer(sparsity):
    torch.manual_seed(0)
    w = torch.randn(13, 24)
    keep = sparsity_mask(magnitude_score(w), sparsity, None, per_row=False)
    assert keep.sum().item() == round((1 - sparsity) * w.numel())
    # every kept weight is at least as large as every dropped one
    if (~keep).any() and keep.any():
        assert w.abs()[keep].min() >= w.abs()[~keep].max()


def test_wanda_matches_brute_force_per_row():
    torch.manual_seed(1)
    w = torch.randn(6, 10)
    x = torch.randn(50, 10) * torch.linspace(0.1, 3, 10)   # features with different scales
    acc = InputSquaredNorm(10)
    acc.add_batch(x[:20])
    acc.add_batch(x[20:].reshape(2, 15, 10))               # batches of any shape
    keep = sparsity_mask(wanda_score(w, acc.norm()), 0.4, None, per_row=True)
    for i in range(6):
        scores = [abs(w[i, j].item()) * sum(x[t, j].item() ** 2 for t in range(50)) ** 0.5 for j in range(10)]
        order = sorted(range(10), key=lambda j: scores[j])
        expected = set(order[4:])                            # drop the 4 lowest of 10
        assert {j for j in range(10) if keep[i, j]} == expected


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (3, 4)])
def test_nm_mask_brute_force(n, m):
    torch.manual_seed(2)
    s = torch.rand(5, 4 * m)
    keep = nm_mask(s, n, m)
    for i in range(5):
        for g in range(4):
            group = s[i, g * m:(g + 1) * m].tolist()
            best = set(sorted(range(m), key=lambda j: group[j])[m - n:])
            assert {j for j in range(m) if keep[i, g * m + j]} == best


def test_nm_mask_rejects_indivisible():
    with pytest.raises(PrunekitError, match="not divisible"):
        nm_mask(torch.rand(3, 10), 2, 4)


def test_exact_topk_handles_ties():
    w = torch.ones(4, 8)                                     # all scores tie
    keep = sparsity_mask(w, 0.5, None, per_row=True)
    assert (keep.sum(1) == 4).all()
    keep = sparsity_mask(w, 0.25, None, per_row=False)
    assert keep.sum().item() == 24
