"""Training one block alone on recorded inputs and targets: what local distillation (recovery
--local) and evo-shape's variant refinement share. A weight that has zeros keeps them: its gradient
is masked (AdamW's moments stay zero there, weight decay is off) and it is masked again after every
optimiser step."""
from __future__ import annotations

import torch

from ..solvers.distill import normalised_error


def guard_zeros(guarded: dict) -> list:
    """Mask the gradients of the guarded weights; returns the hook handles."""
    return [p.register_hook(lambda g, keep=keep: g * keep.to(g.device, g.dtype)) for p, keep in guarded.items()]


@torch.no_grad()
def reapply(guarded: dict) -> None:
    for p, keep in guarded.items():
        p.mul_(keep.to(p.device, p.dtype))


def block_error(block, x, y, kwargs, device, batch) -> float:
    with torch.no_grad():
        num = den = 0.0
        for j in range(0, x.shape[0], batch):
            out = block(x[j:j + batch].to(device), **kwargs).float()
            t = y[j:j + batch].to(device).float()
            num += float((out - t).pow(2).sum())
            den += float(t.pow(2).sum())
    return num / max(den, 1e-12)


def train_block(block, x, y, kwargs, masks: dict, device, *, steps: int, lr: float, batch: int, seed: int,
                params: list | None = None, grad_hooks: dict | None = None) -> tuple[float, float]:
    """AdamW on `params` (None: every weight of the block) for `steps` micro-batches of `batch`
    windows (cycling over them); returns the error before and after (the old weights come back if
    it did not fall). `grad_hooks`: {parameter: fn(grad) -> grad}, applied while training. The
    block's requires_grad flags are left as they were."""
    before = block_error(block, x, y, kwargs, device, batch)
    saved = {k: v.clone() for k, v in block.state_dict().items()}
    flags = {p: p.requires_grad for p in block.parameters()}
    params = list(block.parameters()) if params is None else params
    block.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    handles = guard_zeros(masks) + [p.register_hook(fn) for p, fn in (grad_hooks or {}).items()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    try:
        with torch.enable_grad():
            for step in range(steps):
                idx = order[(torch.arange(batch) + step * batch) % x.shape[0]]
                loss = normalised_error(block(x[idx].to(device), **kwargs), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                reapply(masks)
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
    after = block_error(block, x, y, kwargs, device, batch)
    if not after < before:
        block.load_state_dict(saved)
        after = before
    return before, after


