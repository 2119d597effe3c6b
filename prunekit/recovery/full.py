"""Training the block weights themselves (--train full | blocks:LIST): only the chosen decoder
blocks' parameters get gradients, and a weight that has zeros keeps every one of them: its
gradient is masked (AdamW's moments stay zero there, weight decay is off) and the weight is
masked again after every optimiser step, so the pattern is exact whatever the optimiser does."""
from __future__ import annotations

import torch

from ..engine.block_training import reapply
from ..models.adapter import ModelAdapter


def set_trainable(model, blocks: list[int]) -> int:
    """Freeze everything but the parameters of `blocks`; returns the trainable parameter count."""
    adapter = ModelAdapter(model)
    model.requires_grad_(False)
    for i in blocks:
        adapter.layers[i].requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trained_masks(model, blocks: list[int], masks: dict[str, torch.Tensor]) -> dict[torch.nn.Parameter, torch.Tensor]:
    """The zero patterns (by full module name, recovery/lora.zero_patterns) of the trained blocks'
    weights, keyed by the parameter they guard."""
    adapter = ModelAdapter(model)
    prefix = adapter.spec.layers_path
    guarded = {}
    for i in blocks:
        for name, lin in adapter.block_linears(adapter.layers[i]).items():
            keep = masks.get(f"{prefix}.{i}.{name}")
            if keep is not None:
                guarded[lin.weight] = keep
    return guarded


def keep_zeros_callback(guarded: dict):
    """A TrainerCallback that masks the guarded weights after every optimiser step."""
    from transformers import TrainerCallback

    class KeepZeros(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            reapply(guarded)

    return KeepZeros()
