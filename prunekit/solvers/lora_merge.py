"""Merging a LoRA update into a weight without filling its zeros (sparse stays sparse).

A LoRA update s * B @ A is dense, so a plain merge turns an unstructured or N:M sparse weight
back into a dense one. Masking the update with the weight's zero pattern keeps every zero a zero
and changes only the kept entries: W' = W + keep * (s * B @ A).
"""
from __future__ import annotations

import torch


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """The dense update s * B @ A, in float32 ([out, r] @ [r, in] -> [out, in])."""
    return (lora_b.float() @ lora_a.float()) * scaling


def masked_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, keep: torch.Tensor) -> torch.Tensor:
    """keep * (s * B @ A) in the adapters' dtype, differentiable in A and B: the update a masked
    adapter applies during training, equal to what the masked merge adds."""
    return (lora_b @ lora_a) * scaling * keep.to(device=lora_a.device, dtype=lora_a.dtype)


def masked_lora_merge(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """W + keep * (s * B @ A), computed in float32 and returned in the weight's dtype.

    `keep` is the boolean pattern of entries allowed to change (recorded as weight != 0 before
    training); None merges densely."""
    delta = lora_delta(lora_a, lora_b, scaling).to(weight.device)
    if keep is not None:
        if keep.shape != weight.shape:
            raise ValueError(f"mask shape {tuple(keep.shape)} differs from weight shape {tuple(weight.shape)}")
        delta = delta * keep.to(device=weight.device, dtype=delta.dtype)
    return (weight.float() + delta).to(weight.dtype)


def nm_valid(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m consecutive input weights holds at most n non-zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight != 0).reshape(rows, cols // m, m).sum(-1) <= n).all())
