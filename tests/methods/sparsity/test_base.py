"""Magnitude and Wanda through prunekit.prune on tiny models: exact counts, N:M structure, no
change at zero sparsity, bad configs refused."""
import pytest
import torch

import prunekit
from prunekit import MagnitudeConfig, WandaConfig
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def _calib(n=4, L=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, L), generator=g)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_unstructured_exact_counts(family, sparsity):
    for cfg, per_row in ((MagnitudeConfig(sparsity=sparsity), False), (WandaConfig(sparsity=sparsity), True)):
        model = plain_model(family)
        res = prunekit.prune(model, cfg, _calib(), progress=False)
        for name, lin in ModelAdapter(model).all_linears():
            w = lin.weight
            if per_row:   # Wanda: exactly round((1-s)*in) kept in every row
                assert (torch.count_nonzero(w, dim=1) == round((1 - sparsity) * w.shape[1])).all(), name
            else:         # magnitude: exactly round((1-s)*numel) kept in the layer
                assert torch.count_nonzero(w).item() == round((1 - sparsity) * w.numel()), name
        assert abs(res.sparsity["overall"] - sparsity) < 0.01


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8"])
def test_nm_structure(family, pattern):
    n, m = map(int, pattern.split(":"))
    for cfg in (MagnitudeConfig(pattern=pattern), WandaConfig(pattern=pattern)):
        assert cfg.sparsity == pytest.approx(1 - n / m)
        model = plain_model(family)
        prunekit.prune(model, cfg, _calib(), progress=False)
        for name, lin in ModelAdapter(model).all_linears():
            groups = lin.weight.reshape(lin.weight.shape[0], -1, m)
            assert (torch.count_nonzero(groups, dim=-1) == n).all(), name


def test_zero_sparsity_changes_nothing():
    model, ref = plain_model("llama"), plain_model("llama")
    prunekit.prune(model, WandaConfig(sparsity=0.0), _calib(), progress=False)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sparsity=1.0), "outside"), (dict(sparsity=-0.1), "outside"),
    (dict(pattern="4:4"), "1 <= N < M"), (dict(sparsity=0.6, pattern="2:4"), "disagrees"), (dict(), "give a sparsity"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(PrunekitError, match=match):
        WandaConfig(**kwargs)


def test_indivisible_pattern_rejected_before_pruning():
    model, ref = plain_model("llama"), plain_model("llama")
    with pytest.raises(PrunekitError, match="not divisible by M=7"):
        prunekit.prune(model, MagnitudeConfig(pattern="3:7"), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
