"""Top-k KL against the coarsened KL, bounding the exact one."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from prunekit.solvers.divergence import kl_exact, kl_topk, topk_summary


def brute_kl(p_logits, q_logits):
    p, q = F.log_softmax(p_logits.double(), -1), F.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def test_topk_kl_equals_coarsened_kl_and_bounds_exact():
    g = torch.Generator().manual_seed(0)
    dense, cand = torch.randn(40, 50, generator=g) * 3, torch.randn(40, 50, generator=g) * 3
    exact = kl_exact(F.log_softmax(dense, -1), cand)
    assert torch.allclose(exact.double(), brute_kl(dense, cand), atol=1e-5)
    assert torch.allclose(kl_topk(*topk_summary(dense, 50), cand), exact, atol=1e-5)   # k = V is exact
    k = 8
    approx = kl_topk(*topk_summary(dense, k), cand).double()
    # brute force: the (k+1)-outcome distributions top-k + tail, KL between them
    p, q = F.softmax(dense.double(), -1), F.softmax(cand.double(), -1)
    idx = p.topk(k, -1).indices
    pk, qk = p.gather(-1, idx), q.gather(-1, idx)
    pc = torch.cat([pk, 1 - pk.sum(-1, keepdim=True)], -1)
    qc = torch.cat([qk, 1 - qk.sum(-1, keepdim=True)], -1)
    coarse = (pc * (pc.log() - qc.log())).sum(-1)
    assert torch.allclose(approx, coarse, rtol=1e-4, atol=1e-6)
    assert (approx <= exact.double() + 1e-5).all() and (approx < exact.double()).any()
