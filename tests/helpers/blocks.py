"""What the engine and depth tests share: a stand-in for the adapter, the model's own block
outputs, the windows they run on."""
from __future__ import annotations

import torch
import torch.nn as nn

from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import ADAPTED_FAMILIES, WINDOW

LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class Layout:
    """What the engine and the depth stack use of an adapter, without the adapter's family table."""

    def __init__(self, model):
        self.model = model

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def pre_block_modules(self):
        return []          # everything runs on the CPU: nothing to move

    def final_modules(self):
        return [self.model.model.norm]

    def linear_names(self):
        return LLAMA_LINEARS   # Gemma's projections carry Llama's names (merges only)

    def sublayers(self, block):
        return ("attention", "mlp")

    def sublayer_linears(self, block, part):
        names = LLAMA_LINEARS[:4] if part == "attention" else LLAMA_LINEARS[4:]
        return [block.get_submodule(n) for n in names]

    def replace_layers(self, blocks):
        ModelAdapter.replace_layers(self, blocks)


def adapter_for(model):
    family = model.config.model_type
    return ModelAdapter(model) if family in ADAPTED_FAMILIES else Layout(model)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def window_ids(n=2, seed=0):
    """`n` windows of WINDOW tokens: longer than every tiny model's sliding window."""
    return torch.randint(3, 300, (n, WINDOW), generator=torch.Generator().manual_seed(seed))
