"""Similarity of representations and the depth methods' merge rule: pure tensor math.

Rows of X and Y are examples (tokens), columns features. CKA is accumulated in float64
(Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", arXiv 1905.00414): the feature form ||Y_cᵀX_c||²_F / (||X_cᵀX_c||_F ||Y_cᵀY_c||_F) when
there are more examples than features, the equal kernel form <K_c, L_c>_F / (||K_c|| ||L_c||)
with K_c = X_c X_cᵀ otherwise, whichever is cheaper.
"""
from __future__ import annotations

import torch


def _centered(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1]).double()
    return x - x.mean(0, keepdim=True)


def _gram_features(xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """Per-representation matrices whose Frobenius inner products give the HSIC terms."""
    n, d = xs[0].reshape(-1, xs[0].shape[-1]).shape
    kernel = n <= d
    out = []
    for x in xs:
        c = _centered(x)
        out.append(c @ c.T if kernel else c)
    return out, kernel


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same examples (x: [n, d1], y: [n, d2])."""
    return float(cka_matrix([x, y])[0, 1])


def cka_matrix(xs: list[torch.Tensor]) -> torch.Tensor:
    """Pairwise linear CKA of representations of the same n examples: [len(xs), len(xs)]."""
    if not xs:
        return torch.zeros(0, 0, dtype=torch.float64)
    n = xs[0].reshape(-1, xs[0].shape[-1]).shape[0]
    if any(x.reshape(-1, x.shape[-1]).shape[0] != n for x in xs):
        raise ValueError("all representations must cover the same examples")
    mats, kernel = _gram_features(xs)
    k = len(mats)
    hsic = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(i, k):
            if kernel:
                v = (mats[i] * mats[j]).sum()
            elif i == j:
                v = (mats[i].T @ mats[i]).square().sum()
            else:
                v = (mats[j].T @ mats[i]).square().sum()
            hsic[i, j] = hsic[j, i] = v
    norms = hsic.diagonal().sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, hsic / denom.clamp_min(1e-300), torch.zeros_like(hsic))


def mean_token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over tokens of cos(a_t, b_t) (a, b: [..., d])."""
    a = a.reshape(-1, a.shape[-1]).double()
    b = b.reshape(-1, b.shape[-1]).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def block_influence(block_input: torch.Tensor, block_output: torch.Tensor) -> float:
    """ShortGPT's block influence: 1 - mean token cosine of a block's input and output."""
    return 1.0 - mean_token_cosine(block_input, block_output)


def sample_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """SLM/LaCo similarity: per sample, cosine of the two [L, d] tensors flattened whole;
    averaged over samples (a, b: [n, L, d])."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


MERGE_RULES = ("rdsc", "top")


def merge_tensors(tensors: list[torch.Tensor], rule: str) -> torch.Tensor:
    """One parameter of a merged window, tensors ordered bottom (the base) to top.

    rdsc: base + sum of (other - base), the paper's and LaCo's rule.
    top: the top layer's tensor, which is what the released SLM code's in-place updates amount to."""
    if rule not in MERGE_RULES:
        raise ValueError(f"unknown merge rule {rule!r}: choose from {', '.join(MERGE_RULES)}")
    if rule == "top":
        return tensors[-1].clone()
    base = tensors[0].double()
    merged = base.clone()
    for t in tensors[1:]:
        merged += t.double() - base
    return merged.to(tensors[0].dtype)
