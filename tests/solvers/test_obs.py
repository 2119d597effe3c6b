"""The SparseGPT (OBS) solver on small random problems."""
import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.solvers.masks import sparsity_mask
from prunekit.solvers.obs import inverse_hessian_factor, sparsegpt_prune
from prunekit.solvers.scores import magnitude_score, wanda_score


def _problem(rows=24, cols=64, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5 + torch.eye(cols)     # correlated features
    scale = torch.linspace(0.2, 2.0, cols)[torch.randperm(cols, generator=g)]   # no block holds only weak inputs
    X = torch.randn(tokens, cols, generator=g) @ mix * scale
    W = torch.randn(rows, cols, generator=g)
    H = 2 * X.T @ X / tokens
    return W, X, H


def _err(W, Wp, X):
    return ((X @ W.T - X @ Wp.T) ** 2).sum().item()


@pytest.mark.parametrize("sparsity,pattern", [(0.5, None), (0.7, None), (0.5, (2, 4)), (0.75, (1, 4))])
def test_sparsegpt_error_below_wanda_and_magnitude(sparsity, pattern):
    W, X, H = _problem()
    Ws, info = sparsegpt_prune(W, H, sparsity, pattern, blocksize=16)
    wanda = W * sparsity_mask(wanda_score(W, X.pow(2).sum(0).sqrt()), sparsity, pattern, per_row=True)
    mag = W * sparsity_mask(magnitude_score(W), sparsity, pattern, per_row=False)
    e = _err(W, Ws, X)
    assert e < _err(W, wanda, X) and e < _err(W, mag, X)
    assert info.retries == 0 and info.loss > 0


def test_zero_sparsity_returns_w_unchanged():
    W, X, H = _problem()
    Ws, info = sparsegpt_prune(W, H, 0.0)
    assert torch.equal(Ws, W) and info.loss == 0


def test_unstructured_count_per_block_is_exact():
    W, X, H = _problem(rows=10, cols=64)
    Ws, _ = sparsegpt_prune(W, H, 0.6, blocksize=16)
    for b in range(4):
        assert (Ws[:, b * 16:(b + 1) * 16] == 0).sum().item() == round(0.6 * 10 * 16)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_exact(n, m):
    W, X, H = _problem(cols=64)
    Ws, _ = sparsegpt_prune(W, H, 1 - n / m, (n, m), blocksize=20)   # blocksize is rounded to a multiple of M
    assert (torch.count_nonzero(Ws.reshape(Ws.shape[0], -1, m), dim=-1) == n).all()


def test_dead_inputs_are_zeroed():
    W, X, H = _problem(cols=16)
    H[3, :] = 0
    H[:, 3] = 0
    Ws, _ = sparsegpt_prune(W, H, 0.0)
    assert (Ws[:, 3] == 0).all()


def test_cholesky_retry_path():
    H = torch.tensor([[1.0, 1.05], [1.05, 1.0]])          # eigenvalues 2.05 and -0.05
    U, damp, retries, log = inverse_hessian_factor(H, 0.01)
    assert retries == 1 and damp == pytest.approx(0.1) and "retrying" in log[0]
    Hd = H + 0.1 * torch.eye(2)
    assert torch.allclose(U.T @ U, torch.linalg.inv(Hd), atol=1e-5)
    W = torch.randn(3, 2)
    _, info = sparsegpt_prune(W, H, 0.5)
    assert info.retries == 1
    with pytest.raises(PrunekitError, match="not positive definite"):
        inverse_hessian_factor(-torch.eye(2) * 100, 0.01, max_retries=1)


def test_hessian_workspace_is_restored_and_overwriting_changes_nothing():
    W, _, H = _problem()
    H[5, 5] = 0                                           # a dead input: the solver edits H there
    before = H.clone()
    U, *_ = inverse_hessian_factor(H, 0.01)
    assert torch.equal(H, before)                         # the dampening is undone exactly
    for pattern in (None, (2, 4)):
        ref, _ = sparsegpt_prune(W, H, 0.5, pattern)
        assert torch.equal(H, before)
        mine, _ = sparsegpt_prune(W, H.clone(), 0.5, pattern, overwrite_h=True)
        assert torch.equal(ref, mine)
