"""Whether a model's blocks still have one shape, read from the modules themselves (so it holds
for any family): depth merging adds blocks' weights entry by entry, so it needs alike blocks;
width search reads each block's own widths when they differ from the config's."""
from __future__ import annotations

import torch

from .adapter import ModelAdapter, get_path


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


def _rows(adapter: ModelAdapter, block, role: str) -> int:
    """Rows of `block` that compute `role` (a fused matrix's share is fixed by the config)."""
    name, rows = adapter.role_rows(role)
    return len(range(get_path(block, name).out_features)[rows])


def full_width(adapter: ModelAdapter) -> bool:
    """Every block has the attention and MLP widths the config states for the model (a block of a
    width-pruned model has fewer)."""
    kv_dims = adapter.dim("kv_heads") * adapter.dim("head_dim")
    q_dims = adapter.dim("heads") * adapter.dim("head_dim")
    for block in adapter.layers:
        if _rows(adapter, block, "k") != kv_dims or _rows(adapter, block, "q") != q_dims:
            return False
        if adapter.role(block, "down").in_features != adapter.dim("mlp"):
            return False
    return True
