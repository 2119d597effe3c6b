"""Small context managers every stage needs: the KV cache off while a model is being pruned or
measured with full forwards, and modules visiting the compute device and coming back."""
from __future__ import annotations

from contextlib import contextmanager

import torch.nn as nn


@contextmanager
def cache_disabled(model: nn.Module):
    """`model.config.use_cache = False` inside, the previous value restored after (a checkpoint
    saved with the cache off would decode without one)."""
    config = getattr(model, "config", None)
    before = getattr(config, "use_cache", None)
    if config is not None:
        config.use_cache = False
    try:
        yield model
    finally:
        if config is not None:
            config.use_cache = before


@contextmanager
def on_device(modules, device, back="cpu"):
    """Move `modules` (one or several) to `device` inside, and to `back` afterwards."""
    mods = [modules] if isinstance(modules, nn.Module) else list(modules)
    for m in mods:
        m.to(device)
    try:
        yield modules
    finally:
        for m in mods:
            m.to(back)
