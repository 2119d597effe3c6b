"""OWL's sparsities and outlier ratios."""
from __future__ import annotations

import random

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.solvers.owl import outlier_ratio, owl_sparsities


def test_owl_sparsities_average_target_and_stay_in_band():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 40)
        ratios = [rng.random() * 0.05 for _ in range(n)]
        target, lam = rng.uniform(0.2, 0.8), rng.uniform(0.0, 0.15)
        weights = [rng.uniform(1, 3) for _ in range(n)] if rng.random() < 0.5 else None
        s = owl_sparsities(ratios, target, lam, weights)
        w = weights or [1.0] * n
        assert sum(a * b for a, b in zip(s, w)) / sum(w) == pytest.approx(target, abs=1e-12)
        assert all(target - lam - 1e-12 <= x <= target + lam + 1e-12 for x in s)
        order = sorted(range(n), key=lambda i: ratios[i])
        assert all(s[a] >= s[b] - 1e-12 for a, b in zip(order, order[1:]))     # more outliers, less pruning
    # where the plain centring already fits the band, the result is OWL's formula itself
    s = owl_sparsities([0.0, 0.5, 1.0], 0.7, 0.08)
    assert s == pytest.approx([0.78, 0.70, 0.62])
    with pytest.raises(PrunekitError):
        owl_sparsities([0.1, 0.2], 0.95, 0.08)


def test_outlier_ratio_counts_pooled_scores():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 9, generator=g) ** 6, torch.rand(3, 5, generator=g) ** 6
    flat = torch.cat([a.flatten(), b.flatten()])
    expect = sum(1 for v in flat.tolist() if v > 2.0 * float(flat.mean())) / flat.numel()
    assert outlier_ratio([a, b], 2.0) == pytest.approx(expect) and expect > 0
