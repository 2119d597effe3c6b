"""Exact-count keep masks (True = keep) for unstructured and N:M sparsity."""
from __future__ import annotations

import torch

from ..errors import PrunekitError


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): at most N non-zeros in every M consecutive input weights (hardware convention)."""
    if pattern in (None, "", "unstructured"):
        return None
    try:
        n, m = (int(x) for x in str(pattern).split(":"))
    except ValueError:
        raise PrunekitError(f"pattern '{pattern}' is not N:M (e.g. 2:4)") from None
    if not (1 <= n < m):
        raise PrunekitError(f"pattern {n}:{m} needs 1 <= N < M (N is the number of weights kept per group of M)")
    return n, m


def keep_count(total: int, sparsity: float) -> int:
    return int(round((1.0 - sparsity) * total))


def topk_mask(scores: torch.Tensor, keep: int, dim: int | None = None) -> torch.Tensor:
    """Keep exactly `keep` largest scores, over the whole tensor (dim=None) or along `dim`.
    Ties are broken by topk's order, so the count is exact."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if dim is None:
        if keep > 0:
            idx = torch.topk(scores.flatten(), keep, sorted=False).indices
            mask.view(-1)[idx] = True
        return mask
    if keep > 0:
        idx = torch.topk(scores, keep, dim=dim, sorted=False).indices
        mask.scatter_(dim, idx, True)
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest scores in every group of m consecutive entries of the last dim."""
    rows, cols = scores.shape
    if cols % m:
        raise PrunekitError(f"input dimension {cols} is not divisible by M={m}")
    grouped = scores.reshape(rows, cols // m, m)
    return topk_mask(grouped, n, dim=-1).reshape(rows, cols)


def sparsity_mask(scores: torch.Tensor, sparsity: float, pattern: tuple[int, int] | None,
                  per_row: bool) -> torch.Tensor:
    """The keep mask for one weight matrix [out, in] from its scores."""
    if pattern is not None:
        return nm_mask(scores, *pattern)
    if per_row:
        return topk_mask(scores, keep_count(scores.shape[1], sparsity), dim=1)
    return topk_mask(scores, keep_count(scores.numel(), sparsity))
