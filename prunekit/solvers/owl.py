"""OWL, outlier-weighted layerwise sparsity (Yin et al. 2023, arXiv 2310.05175): blocks with
more outlier weights (by the Wanda score) are pruned less, within a band around the target."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..errors import PrunekitError


def outlier_ratio(scores: Iterable[torch.Tensor], m: float = 5.0) -> float:
    """Fraction of the pooled scores (all pruned linears of a block) above m times their mean."""
    flat = torch.cat([s.detach().flatten().float() for s in scores])
    return float((flat > m * flat.mean()).double().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float,
                   weights: Sequence[float] | None = None) -> list[float]:
    """Per-block sparsities from outlier ratios: ratios mapped linearly to [0, 2*lam], centred on
    their (parameter-weighted) mean, subtracted from the target, so the weighted mean sparsity is
    exactly `target` and more outliers mean less pruning.

    Deviation, stated: the reference's plain centring can put a block up to 2*lam from the
    target; here the deviations are scaled down uniformly (order kept) when one exceeds lam, so
    every block lies in [target - lam, target + lam] as the paper describes."""
    if not 0.0 <= target < 1.0:
        raise PrunekitError(f"sparsity {target:g} is outside [0, 1)")
    if lam < 0 or target - lam < 0 or target + lam >= 1:
        raise PrunekitError(f"owl lambda {lam:g} must be >= 0 and keep {target:g} +- lambda inside [0, 1)")
    r = torch.tensor(list(ratios), dtype=torch.float64)
    if r.numel() == 0:
        raise PrunekitError("owl needs at least one block")
    w = torch.ones_like(r) if weights is None else torch.tensor(list(weights), dtype=torch.float64)
    if w.shape != r.shape or (w <= 0).any():
        raise PrunekitError("owl weights must be positive, one per block")
    w = w / w.sum()
    spread = r.max() - r.min()
    if spread == 0 or lam == 0:
        return [target] * r.numel()
    x = (r - r.min()) / spread * (2 * lam)
    dev = x - (w * x).sum()
    dev = dev * min(1.0, lam / float(dev.abs().max()))
    return (target - dev).tolist()
