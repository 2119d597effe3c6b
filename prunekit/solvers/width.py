"""Structured-width solver math for the search method (search-llm, Shen et al. 2024, arXiv 2409.17372; docs/methods.md): importance scores,
mask mutation and crossover, and the ADMM reformation with its closed form. Pure tensors."""
from __future__ import annotations

import math

import torch


def damped_inverse_diag(h: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """diag((2H + λI)^-1), λ = percdamp · mean diag(2H), in float64."""
    h2 = 2.0 * h.double()
    lam = percdamp * h2.diagonal().mean().clamp_min(1e-12)
    inv = torch.linalg.inv(h2 + lam * torch.eye(h2.shape[0], dtype=h2.dtype))
    return inv.diagonal()


def importance(weight: torch.Tensor, h: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column scores of Φ_ij = W_ij² / [(2XXᵀ)⁻¹]_jj (H = XXᵀ over calibration tokens)."""
    phi = weight.double().square() / damped_inverse_diag(h, percdamp)[None, :]
    return phi.sum(1), phi.sum(0)


def attention_unit_scores(q_rows, k_rows, v_rows, o_cols, num_heads: int, num_kv_heads: int, head_dim: int,
                          rotary: bool = True):
    """Scores of attention units [num_kv_heads, units]: a unit is one rotary pair (dims p and
    p + head_dim/2; one dim when the model has no rotary embedding) of one KV head, shared by its
    K and V heads and by every query head of its group (rows of Q, K, V and columns of O), so GQA
    and the rotary pairs stay intact."""
    half = head_dim // 2 if rotary else head_dim
    group = num_heads // num_kv_heads

    def pairs(x, heads):
        x = x.reshape(heads, head_dim)
        return x[:, :half] + x[:, half:] if rotary else x
    q = pairs(q_rows, num_heads).reshape(num_kv_heads, group, half).sum(1)
    o = pairs(o_cols, num_heads).reshape(num_kv_heads, group, half).sum(1)
    return q + o + pairs(k_rows, num_kv_heads) + pairs(v_rows, num_kv_heads)


def top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask keeping the `keep` highest scores (ties by index)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    order = torch.argsort(scores.flatten().double(), descending=True, stable=True)
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def resize_mask(mask: torch.Tensor, keep: int, scores: torch.Tensor) -> torch.Tensor:
    """Grow or trim a mask to `keep` entries by score rank (kept entries stay if possible)."""
    cur = int(mask.sum())
    if cur == keep:
        return mask.clone()
    s = scores.double().clone()
    if cur > keep:   # drop the lowest-scored kept entries
        s[~mask] = math.inf
        order = torch.argsort(s, stable=True)
        out = mask.clone()
        out[order[:cur - keep]] = False
        return out
    s[mask] = -math.inf   # add the highest-scored dropped entries
    order = torch.argsort(s, descending=True, stable=True)
    out = mask.clone()
    out[order[:keep - cur]] = True
    return out


def mutate_mask(mask: torch.Tensor, keep: int, prob: float, alpha: float, gen: torch.Generator,
                scores: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 with the constructive sampler (a deviation: the paper's rejection sampler
    cannot reach α·N overlap when the ratio is below α). With probability `prob` (always when
    the size must change) keep a random ⌈α·keep⌉ of the kept entries and fill up to `keep`
    uniformly from the others; the size is first fixed by score rank."""
    base = resize_mask(mask, keep, scores)
    if int(mask.sum()) == keep and float(torch.rand((), generator=gen)) > prob:
        return base
    kept = torch.nonzero(base).flatten()
    others = torch.nonzero(~base).flatten()
    stay = min(len(kept), math.ceil(alpha * keep))
    out = torch.zeros_like(base)
    perm = kept[torch.randperm(len(kept), generator=gen)]
    out[perm[:stay]] = True
    pool = torch.cat([perm[stay:], others])
    fill = keep - stay
    out[pool[torch.randperm(len(pool), generator=gen)[:fill]]] = True
    return out


def admm_reform(weight: torch.Tensor, h: torch.Tensor, omit: torch.Tensor, rho: float = 1.0, iters: int = 30,
                damp: float = 0.0) -> tuple[torch.Tensor, list[float]]:
    """min ||ŴX − WX||² s.t. the omitted input columns of Ŵ are zero (Theorem 3.1), by ADMM.
    `omit` is a boolean [in_features] mask. Returns Z and the primal residual per iteration.

    H = XXᵀ is first scaled to unit diagonal (W scaled back accordingly; the column constraint is
    unchanged by a diagonal scaling), so that ρ is relative to a unit diagonal whatever the
    activations' scale; without it a fixed ρ is meaningless across layers."""
    hh = h.double() + damp * h.double().diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    d = hh.diagonal().clamp_min(1e-12).sqrt()
    hh = hh / d[:, None] / d[None, :]
    w = weight.double() * d[None, :]
    a = hh + rho * torch.eye(h.shape[0], dtype=torch.float64)
    chol = torch.linalg.cholesky(a)
    hw = hh @ w.T
    z, u = w.clone(), torch.zeros_like(w)
    z[:, omit] = 0
    residuals = []
    for _ in range(iters):
        w_hat = torch.cholesky_solve(hw + rho * (z - u).T, chol).T
        z = w_hat + u
        z[:, omit] = 0
        u = u + w_hat - z
        residuals.append(float((w_hat - z).norm() / w.norm().clamp_min(1e-30)))
    return (z / d[None, :]).to(weight.dtype), residuals


def closed_form_reform(weight: torch.Tensor, h: torch.Tensor, omit: torch.Tensor, damp: float = 0.0) -> torch.Tensor:
    """The exact answer: Ŵ_kept = W_kept + W_omit H_omit,kept H_kept,kept⁻¹, Ŵ_omit = 0."""
    w = weight.double()
    hh = h.double() + damp * h.double().diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    keep = ~omit
    hkk = hh[keep][:, keep]
    hok = hh[omit][:, keep]
    out = torch.zeros_like(w)
    out[:, keep] = w[:, keep] + torch.linalg.solve(hkk, (w[:, omit] @ hok).T).T
    return out.to(weight.dtype)
