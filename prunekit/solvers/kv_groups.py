"""Fewer KV heads for a grouped-query attention: every query head is kept, and the KV heads of
consecutive query groups are merged into one (the layout Nemotron-NAS blocks state as
`n_heads_in_group`). Pure tensors.

Old KV head g serves query heads [g·s, (g+1)·s) (s = heads / kv); with kv' heads, new head j
serves [j·s', (j+1)·s'). With kv' dividing kv, new head j stands for the old heads
G_j = [j·r, (j+1)·r), r = kv / kv', and a model whose old heads in G_j all hold the new head's
weights computes exactly what the smaller model computes (`expand`).

Two fits of the new head:
- mean: the plain mean of the old heads' rows (keys and values alike);
- weighted: each fit minimises the error where it lands. A key's error reaches the logits
  through its queries, q·Δk; with the rotation of rotary positions taken as uniform over
  relative positions, E[(qᵀRΔk)²] weights each key dim by its pair's mean query energy, so the
  key row is a per-dim mean weighted by c_g = Σ_{query heads of g} (E[q_p²] + E[q_{p+d/2}²])/2.
  A value's error reaches the output through o_proj, Σ_i W_o,iΔv, so the new value rows are
  (Σ_g A_g)⁻¹ Σ_g A_g W_v,g with A_g = Σ_{query heads i of g} W_o,iᵀ W_o,i (d × d).
"""
from __future__ import annotations

import torch


def heads_of(w: torch.Tensor, heads: int) -> torch.Tensor:
    """[heads·d, ...] -> [heads, d, ...]."""
    return w.reshape(heads, w.shape[0] // heads, *w.shape[1:])


def expand(merged: torch.Tensor, kv_from: int) -> torch.Tensor:
    """Rows of the kv' new heads repeated for the old heads each stands for: [kv·d, ...]."""
    kv_to = merged.shape[0]
    return merged.repeat_interleave(kv_from // kv_to, dim=0).reshape(-1, *merged.shape[2:])


def merge_keys(w: torch.Tensor, kv_to: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """w: [kv, d, ...] (rows, or a bias [kv, d]); weight: [kv, d] per-dim weights of each old head
    (None: the plain mean). Returns [kv_to, d, ...]."""
    kv, d = w.shape[:2]
    r = kv // kv_to
    groups = w.double().reshape(kv_to, r, d, -1)
    c = torch.ones(kv, d, dtype=torch.float64) if weight is None else weight.double().clamp_min(0)
    c = c.reshape(kv_to, r, d, 1) + 1e-12
    return ((groups * c).sum(1) / c.sum(1)).reshape(kv_to, d, *w.shape[2:]).to(w.dtype)


def merge_values(w: torch.Tensor, kv_to: int, a: torch.Tensor | None = None, damp: float = 1e-6) -> torch.Tensor:
    """w: [kv, d, ...]; a: [kv, d, d] the o_proj weighting A_g of each old head (None: the mean).
    Returns [kv_to, d, ...] = (Σ_g A_g)⁻¹ Σ_g A_g w_g per new head, damped toward the group mean
    (so heads that are equal still merge to themselves)."""
    if a is None:
        return merge_keys(w, kv_to)
    kv, d = w.shape[:2]
    r = kv // kv_to
    rows = w.double().reshape(kv_to, r, d, -1)
    a = a.double().reshape(kv_to, r, d, d)
    total = a.sum(1)
    lam = damp * total.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]
    total = total + lam * torch.eye(d, dtype=total.dtype)
    rhs = torch.einsum("jgab,jgbn->jan", a, rows) + lam * rows.mean(1)
    return torch.linalg.solve(total, rhs).reshape(kv_to, d, *w.shape[2:]).to(w.dtype)


def key_weights(q_energy: torch.Tensor, kv: int, rotary: bool) -> torch.Tensor:
    """q_energy: [heads, d] mean squared query per dim. Returns [kv, d]: each old KV head's summed
    query energy per dim, averaged over each rotary pair (dims p and p + d/2)."""
    heads, d = q_energy.shape
    e = q_energy.double().reshape(kv, heads // kv, d).sum(1)
    if rotary:
        half = (e[:, :d // 2] + e[:, d // 2:]) / 2
        e = torch.cat([half, half], dim=1)
    return e


def value_weights(o_weight: torch.Tensor, heads: int, kv: int) -> torch.Tensor:
    """o_weight: [hidden, heads·d]. Returns A: [kv, d, d], Σ over each old head's query heads of
    W_o,iᵀ W_o,i."""
    hidden, width = o_weight.shape
    d = width // heads
    per_head = o_weight.double().reshape(hidden, heads, d).permute(1, 2, 0)      # [heads, d, hidden]
    gram = per_head @ per_head.transpose(1, 2)                                   # [heads, d, d]
    return gram.reshape(kv, heads // kv, d, d).sum(1)
