"""Input statistics: the Hessian against its direct formula."""
import torch

from prunekit.solvers.stats import InputHessian


def test_hessian_equals_direct_formula():
    torch.manual_seed(3)
    x = torch.randn(3, 7, 5)
    acc = InputHessian(5)
    for b in x:
        acc.add_batch(b)
    flat = x.reshape(-1, 5)
    assert torch.allclose(acc.H, 2 * flat.T @ flat / flat.shape[0], atol=1e-5)
    assert acc.tokens == 21
