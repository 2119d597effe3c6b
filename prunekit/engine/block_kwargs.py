"""What the model's own forward passes each decoder block, recorded without computing a block.

During the recording forward every block's `forward` is temporarily replaced by a recorder that
stores its keyword arguments and returns the hidden state unchanged, so the decoder's loop hands
each block exactly what it would hand it for real (the mask and position embeddings of that
block's layer type, for instance) at the cost of the embedding stage alone. The arguments do not
depend on the hidden states, only on the window length (all windows share one length) and on the
block's position, so they are recorded from the first window; every other window stops at block 0.
Blocks of one kind receive the very same tensors from the model; they stay shared on the device.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import PrunekitError

# never replayed: the engine runs blocks without a KV cache
_DROPPED = ("past_key_values", "past_key_value", "cache")   # the cache under its old and new (5.24) names


class _Stop(Exception):
    pass


class _Recorder:
    def __init__(self, count: int, offload: torch.device):
        self.count, self.offload = count, offload
        self.hidden: list[torch.Tensor] = []
        self.kwargs: list[dict | None] = [None] * count
        self.first_window = True

    def at(self, index: int):
        def forward(hidden_states, *args, **kwargs):
            if args:  # decoders pass everything but the hidden state by keyword; refuse to guess
                raise PrunekitError("decoder block called with positional arguments; cannot record them")
            if index == 0:
                self.hidden.append(hidden_states.to(self.offload))
            if not self.first_window:
                raise _Stop
            self.kwargs[index] = kwargs
            if index == self.count - 1:
                raise _Stop
            return hidden_states
        return forward


def _patch_forward(block: nn.Module, forward):
    """Replace the block's forward on the instance; returns the undo (keeps an instance-level
    forward that was already there, e.g. one installed by accelerate)."""
    had = "forward" in block.__dict__
    previous = block.__dict__.get("forward")
    block.forward = forward

    def undo():
        if had:
            block.forward = previous
        else:
            del block.forward
    return undo


class _SharedCopies:
    """Moves nested kwargs to a device so that one tensor (by identity or by value) is copied once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.by_id: dict[int, torch.Tensor] = {}
        self.distinct: list[torch.Tensor] = []

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if id(t) not in self.by_id:
            same = (s for s in self.distinct
                    if s.shape == t.shape and s.dtype == t.dtype and torch.equal(s, t.to(s.device)))
            found = next(same, None)
            if found is None:
                found = t.to(self.device)
                self.distinct.append(found)
            self.by_id[id(t)] = found
        return self.by_id[id(t)]

    def __call__(self, obj):
        if torch.is_tensor(obj):
            return self.tensor(obj)
        if isinstance(obj, tuple):
            return tuple(self(o) for o in obj)
        if isinstance(obj, list):
            return [self(o) for o in obj]
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        return obj


@torch.no_grad()
def record_block_inputs(model: nn.Module, layers: nn.ModuleList, input_ids: torch.Tensor,
                        device: torch.device, offload: torch.device) -> tuple[torch.Tensor, list[dict]]:
    """(block 0's input for every window [n, L, d] on `offload`, one kwargs dict per block on
    `device`). The modules before block 0 must already be on `device`."""
    rec = _Recorder(len(layers), offload)
    undo = [_patch_forward(block, rec.at(i)) for i, block in enumerate(layers)]
    try:
        for row in input_ids:
            try:
                model(row.unsqueeze(0).to(device), use_cache=False)
            except _Stop:
                pass
            rec.first_window = False
    finally:
        for u in undo:
            u()
    if len(rec.hidden) != len(input_ids) or any(k is None for k in rec.kwargs):
        raise PrunekitError("the model's forward did not call every decoder block once per window")
    hidden = torch.cat(rec.hidden)
    move = _SharedCopies(device)
    kwargs = []
    for k in rec.kwargs:
        k = {name: v for name, v in k.items() if name not in _DROPPED}
        k["use_cache"] = False
        kwargs.append(move(k))
    return hidden, kwargs
