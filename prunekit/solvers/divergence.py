"""KL(P || Q) between next-token distributions, exact or from a top-k summary of P.

Top-k summary of the dense distribution P at one position: its k largest log-probabilities
log p_i (i in T) and the log of the tail mass p_tail = 1 - sum_{i in T} p_i. The candidate Q is
coarsened the same way (q_i for i in T, q_tail = 1 - sum_{i in T} q_i), and

    KL_k = sum_{i in T} p_i (log p_i - log q_i) + p_tail (log p_tail - log q_tail),

the exact KL between the two coarsened (k + 1)-outcome distributions. It never exceeds the full
KL (coarsening cannot increase a divergence) and equals it when k covers the vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_exact(dense_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per position: sum_v p(v) (log p(v) - log q(v)), from P's log-probabilities and Q's logits."""
    lq = F.log_softmax(logits.float(), dim=-1)
    lp = dense_logp.float()
    return (lp.exp() * (lp - lq)).sum(-1)


def _tail_logmass(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """log of the probability outside `idx` (exact logsumexp of the rest, -inf if empty)."""
    return logp.scatter(-1, idx, float("-inf")).logsumexp(-1)


def topk_summary(dense_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k log-probs, their token ids, log tail mass) of each position's distribution."""
    lp = F.log_softmax(dense_logits.float(), dim=-1)
    top, idx = lp.topk(min(k, lp.shape[-1]), dim=-1)
    return top, idx, _tail_logmass(lp, idx)


def kl_topk(top_logp: torch.Tensor, idx: torch.Tensor, tail_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per position: KL_k of the module docstring."""
    lq = F.log_softmax(logits.float(), dim=-1)
    head = (top_logp.exp() * (top_logp - lq.gather(-1, idx))).sum(-1)
    q_tail = _tail_logmass(lq, idx)
    tail = tail_logp.exp() * (tail_logp - q_tail)
    # a zero tail mass contributes nothing (0 * log 0 = 0)
    return head + torch.where(torch.isfinite(tail_logp), tail, torch.zeros_like(tail))
