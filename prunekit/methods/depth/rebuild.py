"""The one code path that makes a depth-pruned model physically smaller.

A plan is a list of groups of consecutive original block indices, bottom to top. A group of one
keeps that block; a longer group becomes one block: the base (lowest) block with its
projections (weights and biases) merged by a rule and its own norms; blocks in no group are
removed. Afterwards the attention modules' `layer_idx` (their KV-cache slot), the config's
`num_hidden_layers` and, where present, its per-layer lists (`layer_types`, the widths of a
width-pruned model) describe the new stack.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter, get_path
from ...models.variable_width import keep_layers
from ...solvers.similarity import merge_tensors


def check_plan(groups: list[list[int]], num_layers: int) -> None:
    flat = [i for g in groups for i in g]
    if not groups or any(not g for g in groups):
        raise PrunekitError("a depth plan needs at least one non-empty group")
    if flat != sorted(set(flat)) or flat[0] < 0 or flat[-1] >= num_layers:
        raise PrunekitError(f"depth plan {groups} is not increasing within 0..{num_layers - 1}")
    for g in groups:
        if g != list(range(g[0], g[-1] + 1)):
            raise PrunekitError(f"merged group {g} is not a run of consecutive blocks")


@torch.no_grad()
def merged_block(adapter: ModelAdapter, blocks: list[nn.Module], rule: str) -> nn.Module:
    """A copy of blocks[0] whose projections are merged from all of `blocks` (norms: the base's)."""
    out = copy.deepcopy(blocks[0])
    if len(blocks) == 1:
        return out
    for name in adapter.linear_names():
        lin = get_path(out, name)
        parts = [get_path(b, name) for b in blocks]
        lin.weight.copy_(merge_tensors([p.weight for p in parts], rule))
        if lin.bias is not None:
            lin.bias.copy_(merge_tensors([p.bias for p in parts], rule))
    return out


def reindex(adapter: ModelAdapter, kept_from: list[int]) -> None:
    """Point every block's attention at its new cache slot and make the config agree."""
    for new, block in enumerate(adapter.layers):
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new
    if len(kept_from) != len(adapter.layers):
        raise PrunekitError(f"{len(kept_from)} kept indices for {len(adapter.layers)} blocks")
    keep_layers(adapter.model.config, kept_from)


def apply_plan(adapter: ModelAdapter, groups: list[list[int]], rule: str = "rdsc") -> None:
    """Replace the decoder blocks by the plan's blocks, in place."""
    check_plan(groups, adapter.num_layers)
    old = list(adapter.layers)
    adapter.replace_layers([old[g[0]] if len(g) == 1 else merged_block(adapter, [old[i] for i in g], rule)
                            for g in groups])
    reindex(adapter, [g[0] for g in groups])


def groups_after_removal(num_layers: int, removed: list[int]) -> list[list[int]]:
    gone = set(removed)
    return [[i] for i in range(num_layers) if i not in gone]
