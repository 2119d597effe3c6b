"""Fidelity to the dense model without labels: KL(P_dense || P_model) of the next-token
distributions, averaged over every position of every window, and how often both models'
top-1 tokens agree."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from ..progress import steps


def kl_and_agreement(dense_logits: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: sum_v p_dense (log p_dense - log p_model), and argmax equality ([..., V] inputs)."""
    ld = F.log_softmax(dense_logits.float(), dim=-1)
    lm = F.log_softmax(logits.float(), dim=-1)
    kl = (ld.exp() * (ld - lm)).sum(-1)
    return kl, dense_logits.argmax(-1) == logits.argmax(-1)


@torch.no_grad()
def kl_to_dense(model, dense, input_ids: torch.Tensor, device: str = "cpu", progress: bool = True) -> dict:
    kls, agree = [], []
    was_m, was_d = next(model.parameters()).device, next(dense.parameters()).device
    model.to(device)
    dense.to(device)
    try:
        for row in steps(input_ids, "kl to dense", "window", enabled=progress):
            x = row.unsqueeze(0).to(device)
            kl, same = kl_and_agreement(dense(x, use_cache=False).logits[0], model(x, use_cache=False).logits[0])
            kls.append(kl.cpu())
            agree.append(same.cpu())
    finally:
        model.to(was_m)
        dense.to(was_d)
    kl, same = torch.cat(kls), torch.cat(agree)
    return {"kl": float(kl.double().mean()), "top1_agreement": float(same.double().mean()), "tokens": kl.numel(),
            "direction": "KL(dense || model), nats per token"}
