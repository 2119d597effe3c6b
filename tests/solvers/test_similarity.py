"""CKA and block influence against closed forms, and the merge rules on toy tensors."""
import math

import pytest
import torch

from prunekit.solvers.similarity import block_influence, cka_matrix, linear_cka, merge_tensors


def _hsic_bruteforce(x, y):
    n = x.shape[0]
    c = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x.double() @ x.double().T, y.double() @ y.double().T
    return torch.trace(k @ c @ l @ c) / (n - 1) ** 2


@pytest.mark.parametrize("n,d", [(20, 6), (6, 20)])  # both the feature and the kernel form
def test_cka_equals_the_centered_hsic_definition(n, d):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, d + 3, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    expect = _hsic_bruteforce(x, y) / torch.sqrt(_hsic_bruteforce(x, x) * _hsic_bruteforce(y, y))
    assert linear_cka(x, y) == pytest.approx(float(expect), rel=1e-9)


def test_cka_is_one_for_identical_and_invariant_to_rotation_and_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = torch.randn(50, 8, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert base < 0.9
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    m = cka_matrix([x, y, x @ q])
    assert torch.allclose(m, m.T) and torch.allclose(m.diagonal(), torch.ones(3, dtype=torch.float64))
    assert m[0, 2] == pytest.approx(1.0, abs=1e-10)


def test_block_influence_is_one_minus_mean_cosine():
    inp = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    out = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])   # cosines 1/sqrt(2) and -1
    assert block_influence(inp, out) == pytest.approx(1 - (1 / math.sqrt(2) - 1) / 2)


def test_merge_rules_on_toy_tensors():
    a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.0]), torch.tensor([-1.0, 5.0])
    assert torch.equal(merge_tensors([a, b, c], "rdsc"), a + (b - a) + (c - a))
    assert torch.equal(merge_tensors([a, b, c], "top"), c)
    assert torch.equal(merge_tensors([a], "rdsc"), a)
