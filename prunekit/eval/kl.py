"""Fidelity to the dense model without labels: KL(P_dense || P_model) of the next-token
distributions, averaged over every position of every window, and how often both models'
top-1 tokens agree. Windows go through both models `batch` at a time (models/plumbing.py
`windows_per_call`: one on the CPU unless set)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from ..models.plumbing import windows_per_call
from ..progress import steps
from .ppl import model_window_bytes


def kl_and_agreement(dense_logits: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: sum_v p_dense (log p_dense - log p_model), and argmax equality ([..., V] inputs)."""
    ld = F.log_softmax(dense_logits.float(), dim=-1)
    lm = F.log_softmax(logits.float(), dim=-1)
    kl = (ld.exp() * (ld - lm)).sum(-1)
    return kl, dense_logits.argmax(-1) == logits.argmax(-1)


@torch.no_grad()
def kl_to_dense(model, dense, input_ids: torch.Tensor, device: str = "cpu", progress: bool = True,
                batch: int | None = None) -> dict:
    kls, agree = [], []
    was_m, was_d = next(model.parameters()).device, next(dense.parameters()).device
    model.to(device)
    dense.to(device)
    n, seqlen = input_ids.shape
    step = windows_per_call(device, 2 * model_window_bytes(model, seqlen), n, batch)   # two models' logits
    unit = "window" if step == 1 else f"batch of {step} windows"
    try:
        for j in steps(range(0, n, step), "kl to dense", unit, enabled=progress):
            x = input_ids[j:j + step].to(device)
            kl, same = kl_and_agreement(dense(x, use_cache=False).logits, model(x, use_cache=False).logits)
            kls.extend(kl.cpu().unbind(0))
            agree.extend(same.cpu().unbind(0))
    finally:
        model.to(was_m)
        dense.to(was_d)
    kl, same = torch.cat(kls), torch.cat(agree)
    return {"kl": float(kl.double().mean()), "top1_agreement": float(same.double().mean()), "tokens": kl.numel(),
            "direction": "KL(dense || model), nats per token"}
