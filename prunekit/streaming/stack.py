"""The depth methods' BlockStack with blocks read from the checkpoint for each forward and freed
after it, so a scoring pass holds one block (plus the cached hidden states it keeps)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..engine.stack import BlockStack


class StreamedStack(BlockStack):
    def __init__(self, adapter, input_ids: torch.Tensor, device: str, load: Callable[[int], None],
                 release: Callable[[int], None]):
        super().__init__(adapter, input_ids, device)
        self.load, self.release = load, release
        self.index = {id(b): i for i, b in enumerate(adapter.layers)}   # block object -> checkpoint index

    @torch.no_grad()
    def through(self, blocks: list[nn.Module], hidden: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            i = self.index[id(block)]
            self.load(i)
            try:
                hidden = super().through([block], hidden)
            finally:
                self.release(i)
        return hidden
