"""Magnitude pruning: per layer, keep the largest |W| (no data, no update). The baseline of
Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models",
arXiv 2306.11695) and SparseGPT; see docs/methods.md."""
from __future__ import annotations

from dataclasses import dataclass

from ...solvers.masks import sparsity_mask
from ...solvers.scores import magnitude_score
from ..base import apply_mask
from ..registry import register_method
from .base import LayerwiseMethod, SparsityConfig


@dataclass
class MagnitudeConfig(SparsityConfig):
    pass


@register_method("magnitude", MagnitudeConfig)
class MagnitudePruner(LayerwiseMethod):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return MagnitudeConfig(sparsity=0.5)

    calibration = None

    def edit(self, index, block):
        for lin in self.linears(block).values():
            keep = sparsity_mask(magnitude_score(lin.weight), self.config.sparsity, self.config.nm, per_row=False)
            apply_mask(lin, keep)
