"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models",
arXiv 2306.11695): score |W_ij| * ||X_j||, compared within each output row, no update. All
linears of a block take their statistics from one pass over the unpruned block."""
from __future__ import annotations

from dataclasses import dataclass

from ...solvers.masks import sparsity_mask
from ...solvers.scores import wanda_score
from ...solvers.stats import InputSquaredNorm
from ..base import apply_mask
from ..registry import register_method
from .base import LayerwiseMethod, SparsityConfig


@dataclass
class WandaConfig(SparsityConfig):
    pass


@register_method("wanda", WandaConfig)
class WandaPruner(LayerwiseMethod):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return WandaConfig(sparsity=0.5)

    def observe(self, index, block):
        self.stats = {}
        hooks = {}
        for name, lin in self.linears(block).items():
            acc = InputSquaredNorm(lin.in_features, device=lin.weight.device)
            self.stats[name] = acc
            hooks[lin] = lambda inp, out, acc=acc: acc.add_batch(inp)
        return hooks

    def edit(self, index, block):
        for name, lin in self.linears(block).items():
            score = wanda_score(lin.weight, self.stats[name].norm())
            apply_mask(lin, sparsity_mask(score, self.config.sparsity, self.config.nm, per_row=True))
        self.stats = {}
