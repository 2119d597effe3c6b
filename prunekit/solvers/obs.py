"""SparseGPT's approximate OBS solver (Frantar & Alistarh 2023, arXiv 2301.00774; docs/methods.md).

Pure tensor math on (W, H): minimise ||W X - W' X||^2 under a sparsity pattern, pruning columns
left to right and compensating the not-yet-processed ones through the upper Cholesky factor of
the dampened inverse Hessian, with lazy block updates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import PrunekitError


@dataclass
class OBSInfo:
    loss: float                   # sum over rows of the OBS error estimate
    damp: float                   # relative dampening that factorised
    retries: int = 0              # Cholesky failures before that
    log: list = field(default_factory=list)


def inverse_hessian_factor(H: torch.Tensor, percdamp: float = 0.01, max_retries: int = 3):
    """Upper Cholesky factor U of (H + damp*mean(diag H)*I)^-1, retrying with 10x the
    dampening when H is not positive definite. Returns (U, damp, retries, log). The dampening is
    added to H's diagonal in place and undone (from a saved copy, exactly) before returning, so at
    most three [in, in] matrices are alive at once: a large MLP's Hessian is the peak of a block."""
    diag = H.diagonal()
    saved = diag.clone()
    mean_diag = torch.mean(saved)
    damp, log = percdamp, []
    try:
        for attempt in range(max_retries + 1):
            diag.add_(damp * mean_diag)
            L, info = torch.linalg.cholesky_ex(H)
            diag.copy_(saved)
            if int(info) == 0:
                Hinv = torch.cholesky_inverse(L)
                del L
                return torch.linalg.cholesky(Hinv, upper=True), damp, attempt, log
            log.append(f"Cholesky failed at relative dampening {damp:g}; retrying with {damp * 10:g}")
            damp *= 10
    finally:
        diag.copy_(saved)
    raise PrunekitError(f"Hessian not positive definite even with relative dampening {damp / 10:g}")


@torch.no_grad()
def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float, pattern: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01, max_retries: int = 3, overwrite_h: bool = False):
    """Return (pruned float32 weight, OBSInfo). W is [out, in]; H is [in, in].

    Unstructured: in every block of `blocksize` columns, exactly round(sparsity * out * block)
    weights with the lowest w^2 / [H^-1]_jj^2 are pruned (an exact count where the reference
    prunes every score <= its threshold). N:M: in every group of M consecutive columns of every
    row the M - N lowest scores are pruned, chosen from the compensated values when the group starts.
    `overwrite_h`: H's dead inputs may be changed in place instead of in a copy."""
    W = W.detach().float().clone()
    H = H.detach().float()
    if not overwrite_h:     # the caller may hand H over as workspace: one [in, in] copy less
        H = H.clone()
    rows, cols = W.shape
    if pattern is not None:
        n, m = pattern
        if cols % m:
            raise PrunekitError(f"input dimension {cols} is not divisible by M={m}")
        blocksize = max(m, blocksize // m * m)      # groups must not straddle blocks
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U, damp, retries, log = inverse_hessian_factor(H, percdamp, max_retries)
    losses = torch.zeros(rows, dtype=torch.float32, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        if pattern is None:
            prune = torch.zeros_like(W1, dtype=torch.bool)
            k = int(round(sparsity * W1.numel()))
            if k > 0:
                scores = (W1 ** 2 / d.reshape(1, -1) ** 2).flatten()
                prune.view(-1)[torch.topk(scores, k, largest=False).indices] = True
        else:
            prune = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            w = W1[:, i]
            if pattern is not None and i % m == 0:
                scores = W1[:, i:i + m] ** 2 / d[i:i + m].reshape(1, -1) ** 2
                idx = torch.topk(scores, m - n, dim=1, largest=False).indices
                prune[:, i:i + m].scatter_(1, idx, True)
            q = w.clone()
            q[prune[:, i]] = 0
            Q1[:, i] = q
            losses += (w - q) ** 2 / d[i] ** 2 / 2
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W, OBSInfo(float(losses.sum()), damp, retries, log)
