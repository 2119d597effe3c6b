"""Whether a model's blocks still have one shape, read from the modules themselves (so it holds
for any family): depth merging adds blocks' weights entry by entry, so it needs alike blocks;
width search reads each block's own widths when they differ from the config's."""
from __future__ import annotations

import torch

from .adapter import ModelAdapter


def _signature(block) -> tuple:
    """Parameter shapes, and the values of integer buffers (a kept-dims index is part of what an
    entry means: two blocks with other kept dims are not alike even at equal widths)."""
    params = tuple((name, tuple(p.shape)) for name, p in block.named_parameters())
    buffers = tuple((name, tuple(b.shape), tuple(b.flatten().tolist()))
                    for name, b in block.named_buffers() if not torch.is_floating_point(b))
    return params + buffers


def blocks_alike(adapter: ModelAdapter) -> bool:
    """Every block has the same parameter shapes and integer buffers as the first."""
    first = _signature(adapter.layers[0])
    return all(_signature(b) == first for b in list(adapter.layers)[1:])


def full_width(adapter: ModelAdapter) -> bool:
    """Every block has the attention and MLP widths the config states for the model (a block of a
    width-pruned model has fewer)."""
    kv_dims = adapter.dim("kv_heads") * adapter.dim("head_dim")
    q_dims = adapter.dim("heads") * adapter.dim("head_dim")
    for block in adapter.layers:
        if adapter.role(block, "k").out_features != kv_dims or adapter.role(block, "q").out_features != q_dims:
            return False
        if adapter.role(block, "down").in_features != adapter.dim("mlp"):
            return False
    return True
