"""Counts that every report carries: parameters and achieved sparsity."""
from __future__ import annotations

import torch

from .models.adapter import ModelAdapter


def param_counts(model: torch.nn.Module) -> dict:
    """Unique parameters (tied embeddings counted once) and how many are non-zero."""
    total = nonzero = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    return {"params_total": total, "params_nonzero": nonzero}


def sparsity_stats(adapter: ModelAdapter, blocks=None) -> dict:
    """Fraction of zeros per pruned linear and over all of them together (over `blocks` only if given)."""
    per_layer, zeros, numel = {}, 0, 0
    for name, lin in adapter.all_linears(blocks):
        z = lin.weight.numel() - int(torch.count_nonzero(lin.weight))
        per_layer[name] = z / lin.weight.numel()
        zeros += z
        numel += lin.weight.numel()
    return {"overall": zeros / numel if numel else 0.0, "per_layer": per_layer}
