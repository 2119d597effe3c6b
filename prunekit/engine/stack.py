"""Calibration forwards through any list of decoder blocks: the whole-model evaluation helper
that depth methods, searches and the layer analysis use to score candidates (final hidden states,
NLL) without rebuilding a model per candidate. Built on the layer-wise engine: block 0's inputs
and every block's kwargs are captured once; a candidate is then run from a cached intermediate
hidden state onward.

A candidate runs blocks at new positions (after a removal) and merged copies of blocks. Each
block keeps the kwargs of its original position, i.e. of its own layer type: that is what the
rebuilt model gives it too, since a smaller model's config keeps its kept blocks' per-layer
settings (`layer_types`), a merged block standing for its base (lowest) block. The stack tags
every block with its original index; a merged block is a deep copy of its base and inherits the tag.

Windows go through blocks `batch` at a time: the given or enclosing batch (models/plumbing.py),
else on CUDA the memory rule and elsewhere `batch_tokens` tokens per call; the head (vocabulary-wide
logits) takes one window per call off CUDA unless a batch is set."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PrunekitError
from ..models.adapter import ModelAdapter
from ..models.plumbing import on_device, windows_per_call
from .sequential import BlockInputs, LayerwiseEngine


ORIGIN = "_prunekit_origin"     # instance attribute: the block's index when the stack captured


def origin_of(block: nn.Module) -> int:
    index = getattr(block, ORIGIN, None)
    if index is None:
        raise PrunekitError("a block the depth stack never captured cannot be run (no recorded kwargs)")
    return index


class BlockStack:
    def __init__(self, adapter: ModelAdapter, input_ids: torch.Tensor, device: str = "cpu", batch_tokens: int = 4096,
                 batch: int | None = None):
        self.adapter = adapter
        self.input_ids = input_ids
        # evaluators keep a few activation-sized states (DepthEvaluator's cache is bounded on its own)
        self.engine = LayerwiseEngine(adapter, device, progress=False, activation_copies=4)
        n, seqlen = input_ids.shape
        block = adapter.layers[0]
        # calibration sets of depth methods are small: run several windows per block call
        self.batch = windows_per_call(device, self.engine.per_window_bytes(block, seqlen), n, batch,
                                      default=max(1, batch_tokens // seqlen))
        vocab = getattr(adapter.model.config, "vocab_size", 1)
        self.head_batch = windows_per_call(device, 12 * seqlen * vocab, n, batch)   # logits, float copy, softmax
        self.start = self.engine.capture(input_ids)
        for i, block in enumerate(adapter.layers):
            setattr(block, ORIGIN, i)
        self.forwards = 0           # block forwards run, for the report

    @torch.no_grad()
    def through(self, blocks: list[nn.Module], hidden: torch.Tensor) -> torch.Tensor:
        """Run `hidden` ([n, L, d] on the offload device) through `blocks` in order."""
        kwargs = self.start.kwargs
        for block in blocks:
            index = origin_of(block)
            with on_device(block, self.engine.device, None):
                hidden = self.engine.forward_block(block, BlockInputs(hidden, kwargs), batch=self.batch, index=index)
            self.forwards += 1
        return hidden

    @torch.no_grad()
    def all_inputs(self, blocks: list[nn.Module]) -> list[torch.Tensor]:
        """The inputs of every block and the last block's output: len(blocks) + 1 tensors."""
        states = [self.start.hidden]
        for block in blocks:
            states.append(self.through([block], states[-1]))
        return states

    @torch.no_grad()
    def final_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm (and projection) applied to the last block's output."""
        mods = self.adapter.final_modules()
        with on_device(mods, self.engine.device, None):
            return torch.cat([self._apply(mods, hidden[j:j + self.head_batch])
                              for j in range(0, hidden.shape[0], self.head_batch)])

    def _apply(self, mods, h):
        h = h.to(self.engine.device)
        for m in mods:
            h = m(h)
        return h.to(self.engine.offload).float()

    @torch.no_grad()
    def nll(self, hidden: torch.Tensor) -> float:
        """Mean next-token NLL of the calibration windows given the last block's output."""
        total, count = 0.0, 0
        mods = self.adapter.post_block_modules()
        with on_device(mods, self.engine.device, None):
            for j0 in range(0, hidden.shape[0], self.head_batch):  # logits are vocab-sized: few windows at a time
                batch = self.adapter.cap_logits(self._apply(mods, hidden[j0:j0 + self.head_batch]))
                for k in range(batch.shape[0]):
                    logits = batch[k, :-1]
                    target = self.input_ids[j0 + k, 1:].to(logits.device)
                    total += F.cross_entropy(logits, target, reduction="sum").item()
                    count += target.numel()
        return total / count
