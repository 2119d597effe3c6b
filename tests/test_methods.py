"""Magnitude and Wanda through prunekit.prune on tiny models: exact counts, N:M structure, and
Wanda's choice in block 0 equal to a brute-force scoring of the dense block-0 inputs."""
import pytest
import torch

import prunekit
from prunekit import MagnitudeConfig, WandaConfig
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from .conftest import VOCAB, make_tiny_model


def _calib(n=4, L=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, L), generator=g)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_unstructured_exact_counts(family, sparsity):
    for cfg, per_row in ((MagnitudeConfig(sparsity=sparsity), False), (WandaConfig(sparsity=sparsity), True)):
        model = make_tiny_model(family)
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
        model = make_tiny_model(family)
        prunekit.prune(model, cfg, _calib(), progress=False)
        for name, lin in ModelAdapter(model).all_linears():
            groups = lin.weight.reshape(lin.weight.shape[0], -1, m)
            assert (torch.count_nonzero(groups, dim=-1) == n).all(), name


def test_wanda_block0_matches_brute_force(family):
    model = make_tiny_model(family)
    dense = make_tiny_model(family)
    ids = _calib(3, 20)
    adapter = ModelAdapter(dense)
    # inputs of every block-0 linear in the dense model, collected directly
    xs = {}
    hooks = [lin.register_forward_hook(lambda m, i, o, n=name: xs.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for name, lin in adapter.block_linears(adapter.layers[0]).items()]
    with torch.no_grad():
        for row in ids:
            dense(row.unsqueeze(0))
    for h in hooks:
        h.remove()
    prunekit.prune(model, WandaConfig(sparsity=0.5), ids, progress=False)
    pruned0 = ModelAdapter(model).block_linears(ModelAdapter(model).layers[0])
    for name, lin in adapter.block_linears(adapter.layers[0]).items():
        x = torch.cat(xs[name])
        score = lin.weight.abs() * x.pow(2).sum(0).sqrt()
        keep_expected = torch.zeros_like(score, dtype=torch.bool)
        k = round(0.5 * score.shape[1])
        keep_expected.scatter_(1, score.argsort(dim=1, descending=True)[:, :k], True)
        assert torch.equal(pruned0[name].weight != 0, keep_expected), name
        assert torch.equal(pruned0[name].weight[keep_expected], lin.weight[keep_expected])   # no update


def test_zero_sparsity_changes_nothing():
    model, ref = make_tiny_model("llama"), make_tiny_model("llama")
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
    model, ref = make_tiny_model("llama"), make_tiny_model("llama")
    with pytest.raises(PrunekitError, match="not divisible by M=7"):
        prunekit.prune(model, MagnitudeConfig(pattern="3:7"), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_wanda_needs_calibration():
    with pytest.raises(PrunekitError, match="needs calibration"):
        prunekit.prune(make_tiny_model("llama"), WandaConfig(sparsity=0.5), None, progress=False)
