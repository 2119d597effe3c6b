"""The sequential layer-wise engine of SparseGPT (arXiv 2301.00774) and Wanda (arXiv 2306.11695);
docs/methods.md.

Calibration windows are embedded once and block 0's inputs recorded. Every block's keyword
arguments (position_embeddings, attention_mask, position_ids, ...) are recorded from the model's
own forward, per block: models whose layers differ (sliding-window and full attention with
their own masks and rotary bases, `layer_types`) call each block with the arguments of its
kind, so replaying block 0's arguments for all blocks would silently compute wrong activations.
Then, block by block: move the block to the compute device, let a visitor hook it and collect
statistics over all windows, let the visitor edit it, forward all windows again through the
edited block to make the next block's inputs, move the block back (to where it came from). Only
one block is ever on the compute device.

Windows go through a block `batch` at a time (models/plumbing.py `windows_per_call`: one on the
CPU, on CUDA as many as a quarter of the free memory holds, at most 64; `batching(n)` or the
`batch` argument set it). The recorded kwargs are those of one window and broadcast over the batch.
Activations wait on the offload device: unless one is given, the compute device itself when two
copies of them, the block, the solver's workspace and a batch's working set fit in 80% of its free
memory (`keep_on_device`; always on the CPU), else the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..models.adapter import ModelAdapter
from ..models.plumbing import (block_forward_bytes, home_device, keep_on_device, module_bytes, on_device,
                               solver_workspace_bytes, windows_per_call)
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
                 offload_device: str | torch.device | None = None, progress: bool = True,
                 batch: int | None = None, activation_copies: int = 2):
        """`offload_device` None: chosen by the residency rule when windows are captured (the
        compute device where they fit, else the CPU); `batch` None: windows_per_call's rule;
        `activation_copies`: how many activation-sized tensors the caller keeps at once."""
        self.adapter = adapter
        self.device = torch.device(device)
        self.auto_offload = offload_device is None
        self.offload = torch.device(offload_device) if offload_device is not None else self.device
        self.resident = self.offload == self.device     # decided again at capture when automatic
        self.progress = progress
        self.batch = batch
        self.copies = activation_copies

    def choose_offload(self, n: int, seqlen: int) -> torch.device:
        """The residency rule for `n` windows of `seqlen` tokens (kept when offload_device was given)."""
        if self.auto_offload:
            config, block = self.adapter.model.config, self.adapter.layers[0]
            dtype = next(iter(block.parameters())).dtype
            activations = n * seqlen * config.hidden_size * dtype.itemsize
            working = self.batch_for(block, n, seqlen) * self.per_window_bytes(block, seqlen)
            resident = module_bytes(block) + solver_workspace_bytes(block) + working
            self.resident = keep_on_device(self.device, activations * self.copies / 2, resident)
            self.offload = self.device if self.resident else torch.device("cpu")
        return self.offload

    def per_window_bytes(self, block: nn.Module, seqlen: int) -> int:
        return block_forward_bytes(block, seqlen, getattr(self.adapter.model.config, "num_attention_heads", 1))

    def batch_for(self, block: nn.Module, n: int, seqlen: int, batch: int | None = None) -> int:
        return windows_per_call(self.device, self.per_window_bytes(block, seqlen), n,
                                batch if batch is not None else self.batch)

    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor) -> BlockInputs:
        """Run the embedding stage for every window; record block 0's inputs and every block's kwargs."""
        self.choose_offload(*input_ids.shape)
        with on_device(self.adapter.pre_block_modules(), self.device, None):
            hidden, kwargs = record_block_inputs(self.adapter.model, self.adapter.layers, input_ids,
                                                 self.device, self.offload)
        return BlockInputs(hidden, kwargs)

    @torch.no_grad()
    def forward_block(self, block: nn.Module, inputs: BlockInputs, out: torch.Tensor | None = None,
                      batch: int | None = None, *, index: int) -> torch.Tensor:
        """All windows through one block (already on the device), `batch` windows per call (None:
        the engine's), with the kwargs recorded for block `index` (batch 1: they broadcast)."""
        kwargs = inputs.kwargs[index]
        n, seqlen = inputs.hidden.shape[:2]
        batch = self.batch_for(block, n, seqlen, batch)
        out = torch.empty_like(inputs.hidden) if out is None else out
        for j in range(0, n, batch):
            h = inputs.hidden[j:j + batch].to(self.device)
            out[j:j + batch] = block(h, **kwargs).to(out.device)     # a block returns its hidden states
        return out

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, visitor: BlockVisitor, desc: str = "pruning", start: int = 0,
            inputs: BlockInputs | None = None, load_block: Callable[[int], None] | None = None,
            release_block: Callable[[int, BlockInputs], None] | None = None) -> BlockInputs:
        """Visit every block in order; returns the final block outputs (the head's inputs).
        Streaming passes load_block(i) (materialise block i), release_block(i, inputs) (block i is
        done, inputs.hidden are its outputs) and, to resume, `start` with that block's `inputs`."""
        inputs = self.capture(input_ids) if inputs is None else inputs
        if inputs.hidden.device != self.offload:     # a resumed run's activations, read from disk
            inputs.hidden = inputs.hidden.to(self.offload)
        spare = torch.empty_like(inputs.hidden)
        layers = self.adapter.layers
        for i in steps(range(start, len(layers)), desc, "block", enabled=self.progress):  # log lines off a terminal
            if load_block is not None:
                load_block(i)
            home = home_device(layers[i])
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
            layers[i] = block.to(home)
            inputs.hidden, spare = outs, inputs.hidden
            if release_block is not None:
                release_block(i, inputs)
        return inputs

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and projection) and lm_head applied to block outputs: the logits."""
        mods = self.adapter.post_block_modules()
        with on_device(mods, self.device, None):
            for m in mods:
                hidden = m(hidden.to(self.device))
        return self.adapter.cap_logits(hidden)
