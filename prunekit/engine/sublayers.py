"""Running blocks with sublayers left out, without copying or editing them: the linear that writes
a left-out sublayer's output returns zeros for as long as the context lasts (models/adapter.py,
SUBLAYERS, says why that removes the sublayer exactly). It works on blocks in memory and on
streamed blocks alike, since the hook sits on the module, not on its weights."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from ..models.adapter import SUBLAYERS, ModelAdapter


def _zeros(module, inputs, output):
    return torch.zeros_like(output)


@contextmanager
def skipping(adapter: ModelAdapter, skips: list[tuple[nn.Module, str]]):
    """Within the context, each (block, part) of `skips` computes its block without that sublayer."""
    handles = [adapter.role(block, SUBLAYERS[part]).register_forward_hook(_zeros) for block, part in skips]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
