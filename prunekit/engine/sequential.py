"""The sequential layer-wise engine (algorithms.md 1.2).

Calibration windows are embedded once; block 0's inputs and *every* keyword argument it is
called with (position_embeddings, attention_mask, cache_position, ...) are recorded by a
catcher, so nothing about the decoder's calling convention is hard-coded. Then, block by
block: move the block to the compute device, let a visitor hook it and collect statistics
over all windows, let the visitor edit it, forward all windows again through the edited
block to make the next block's inputs, move the block back. Only one block is ever on the
compute device; activations wait on the offload device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import PrunekitError
from ..models.adapter import ModelAdapter

Hook = Callable[[torch.Tensor, torch.Tensor], None]


class BlockVisitor:
    """What a method plugs into the engine. Both calls get the block already on the device."""
    modifies: bool = True     # False: edit() changes nothing, so the statistics pass's outputs are reused

    def observe(self, index: int, block: nn.Module) -> dict[nn.Module, Hook]:
        """Modules to hook during the statistics pass: fn(input, output) per forward call."""
        return {}

    def edit(self, index: int, block: nn.Module) -> None:
        """Change the block in place using what observe collected."""


@dataclass
class BlockInputs:
    hidden: torch.Tensor      # [n, L, d] on the offload device, model dtype
    kwargs: dict              # what the decoder passes every block, on the compute device


class _Stop(Exception):
    pass


class _Catcher(nn.Module):
    def __init__(self, block: nn.Module, store: list, kwargs_store: list):
        super().__init__()
        self.block = block
        self.store, self.kwargs_store = store, kwargs_store

    def forward(self, hidden_states, *args, **kwargs):
        if args:  # decoders pass everything but the hidden state by keyword; refuse to guess
            raise PrunekitError("decoder block called with positional arguments; cannot capture them")
        self.store.append(hidden_states)
        if not self.kwargs_store:
            self.kwargs_store.append(kwargs)
        raise _Stop


def _to(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _hidden(out):
    # decoder blocks return a tensor in transformers 5, a tuple in older versions
    return out[0] if isinstance(out, (tuple, list)) else out


class LayerwiseEngine:
    def __init__(self, adapter: ModelAdapter, device: str | torch.device = "cpu",
                 offload_device: str | torch.device = "cpu", progress: bool = True):
        self.adapter = adapter
        self.device = torch.device(device)
        self.offload = torch.device(offload_device)
        self.progress = progress

    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor) -> BlockInputs:
        """Run the embedding stage for every window and record block 0's inputs and kwargs."""
        model, layers = self.adapter.model, self.adapter.layers
        pre = self.adapter.pre_block_modules()
        for m in pre:
            m.to(self.device)
        store, kwargs_store = [], []
        first = layers[0]
        layers[0] = _Catcher(first, store, kwargs_store)
        try:
            for row in input_ids:
                try:
                    model(row.unsqueeze(0).to(self.device), use_cache=False)
                except _Stop:
                    pass
        finally:
            layers[0] = first
            for m in pre:
                m.to(self.offload)
        if len(store) != len(input_ids):
            raise PrunekitError("the model never reached its first decoder block")
        hidden = torch.cat([h.to(self.offload) for h in store])
        kwargs = {k: v for k, v in kwargs_store[0].items() if k not in ("past_key_values", "past_key_value")}
        kwargs["use_cache"] = False
        return BlockInputs(hidden, _to(kwargs, self.device))

    @torch.no_grad()
    def forward_block(self, block: nn.Module, inputs: BlockInputs, out: torch.Tensor | None = None,
                      batch: int = 1) -> torch.Tensor:
        """All windows through one block (already on the device), `batch` windows per call (the
        captured kwargs have batch 1 and broadcast)."""
        out = torch.empty_like(inputs.hidden) if out is None else out
        for j in range(0, inputs.hidden.shape[0], batch):
            h = inputs.hidden[j:j + batch].to(self.device)
            out[j:j + batch] = _hidden(block(h, **inputs.kwargs)).to(self.offload)
        return out

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, visitor: BlockVisitor, desc: str = "pruning", start: int = 0,
            inputs: BlockInputs | None = None, load_block: Callable[[int], None] | None = None,
            release_block: Callable[[int, BlockInputs], None] | None = None) -> BlockInputs:
        """Visit every block in order; returns the final block outputs (the head's inputs).
        Streaming passes load_block(i) (materialise block i), release_block(i, inputs) (block i is
        done, inputs.hidden are its outputs) and, to resume, `start` with that block's `inputs`."""
        inputs = self.capture(input_ids) if inputs is None else inputs
        spare = torch.empty_like(inputs.hidden)
        layers = self.adapter.layers
        bar = tqdm(range(start, len(layers)), desc=desc, unit="block", disable=None if self.progress else True)
        for i in bar:
            if load_block is not None:
                load_block(i)
            block = layers[i].to(self.device)
            hooks = visitor.observe(i, block)
            if hooks:
                handles = [m.register_forward_hook(lambda mod, inp, out, fn=fn: fn(inp[0], out))
                           for m, fn in hooks.items()]
                try:
                    self.forward_block(block, inputs, spare)
                finally:
                    for h in handles:
                        h.remove()
            visitor.edit(i, block)
            if hooks and not visitor.modifies:
                outs = spare     # the statistics pass already produced this block's outputs
            else:
                outs = self.forward_block(block, inputs, spare)
            layers[i] = block.to(self.offload)
            inputs.hidden, spare = outs, inputs.hidden
            if release_block is not None:
                release_block(i, inputs)
        return inputs

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and projection) and lm_head applied to block outputs: the logits."""
        mods = self.adapter.post_block_modules()
        try:
            for m in mods:
                m.to(self.device)
                hidden = m(hidden.to(self.device))
        finally:
            for m in mods:
                m.to(self.offload)
        return hidden
