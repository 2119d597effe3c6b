"""The sequential layer-wise engine of SparseGPT (arXiv 2301.00774) and Wanda (arXiv 2306.11695);
docs/methods.md.

Calibration windows are embedded once and block 0's inputs recorded. Every block's keyword
arguments (position_embeddings, attention_mask, position_ids, ...) are recorded from the model's
own forward, per block: models whose layers differ (sliding-window and full attention with
their own masks and rotary bases, `layer_types`) call each block with the arguments of its
kind, so replaying block 0's arguments for all blocks would silently compute wrong activations.
Then, block by block: move the block to the compute device, let a visitor hook it and collect
statistics over all windows, let the visitor edit it, forward all windows again through the
edited block to make the next block's inputs, move the block back. Only one block is ever on
the compute device; activations wait on the offload device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..models.adapter import ModelAdapter
from ..models.plumbing import on_device
from ..progress import steps
from .block_kwargs import record_block_inputs

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
    kwargs: list              # per block index at capture: what the model's forward passes that block
                              # (batch 1, on the compute device; blocks of one kind share tensors)


class LayerwiseEngine:
    def __init__(self, adapter: ModelAdapter, device: str | torch.device = "cpu",
                 offload_device: str | torch.device = "cpu", progress: bool = True):
        self.adapter = adapter
        self.device = torch.device(device)
        self.offload = torch.device(offload_device)
        self.progress = progress

    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor) -> BlockInputs:
        """Run the embedding stage for every window; record block 0's inputs and every block's kwargs."""
        with on_device(self.adapter.pre_block_modules(), self.device, self.offload):
            hidden, kwargs = record_block_inputs(self.adapter.model, self.adapter.layers, input_ids,
                                                 self.device, self.offload)
        return BlockInputs(hidden, kwargs)

    @torch.no_grad()
    def forward_block(self, block: nn.Module, inputs: BlockInputs, out: torch.Tensor | None = None,
                      batch: int = 1, *, index: int) -> torch.Tensor:
        """All windows through one block (already on the device), `batch` windows per call, with
        the kwargs recorded for block `index` (batch 1: they broadcast)."""
        kwargs = inputs.kwargs[index]
        out = torch.empty_like(inputs.hidden) if out is None else out
        for j in range(0, inputs.hidden.shape[0], batch):
            h = inputs.hidden[j:j + batch].to(self.device)
            out[j:j + batch] = block(h, **kwargs).to(self.offload)     # a block returns its hidden states
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
        for i in steps(range(start, len(layers)), desc, "block", enabled=self.progress):  # log lines off a terminal
            if load_block is not None:
                load_block(i)
            block = layers[i].to(self.device)
            hooks = visitor.observe(i, block)
            if hooks:
                handles = [m.register_forward_hook(lambda mod, inp, out, fn=fn: fn(inp[0], out))
                           for m, fn in hooks.items()]
                try:
                    self.forward_block(block, inputs, spare, index=i)
                finally:
                    for h in handles:
                        h.remove()
            visitor.edit(i, block)
            if hooks and not visitor.modifies:
                outs = spare     # the statistics pass already produced this block's outputs
            else:
                outs = self.forward_block(block, inputs, spare, index=i)
            layers[i] = block.to(self.offload)
            inputs.hidden, spare = outs, inputs.hidden
            if release_block is not None:
                release_block(i, inputs)
        return inputs

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and projection) and lm_head applied to block outputs: the logits."""
        mods = self.adapter.post_block_modules()
        with on_device(mods, self.device, self.offload):
            for m in mods:
                hidden = m(hidden.to(self.device))
        return self.adapter.cap_logits(hidden)
