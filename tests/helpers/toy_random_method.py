"""A method added the way a contributor adds one: this module alone, no edit anywhere else.
Random masks at a given sparsity (a sanity baseline: any real method should beat it)."""
from dataclasses import dataclass

import torch

from prunekit.methods.base import apply_mask
from prunekit.methods.options import option, require
from prunekit.methods.registry import register_method
from prunekit.methods.sparsity.base import LayerwiseMethod, SparsityConfig
from prunekit.solvers.masks import sparsity_mask


@dataclass
class RandomMaskConfig(SparsityConfig):
    mask_seed: int = option(0, "seed of the random scores")

    def __post_init__(self):
        super().__post_init__()
        require(self.mask_seed >= 0, "{mask_seed} must be at least 0")


@register_method("random-mask", RandomMaskConfig)
class RandomMask(LayerwiseMethod):
    calibration = None

    def edit(self, index, block):
        gen = torch.Generator().manual_seed(self.config.mask_seed * 1000 + index)
        for lin in self.linears(block).values():
            score = torch.rand(lin.weight.shape, generator=gen)
            apply_mask(lin, sparsity_mask(score, self.config.sparsity, self.config.nm, per_row=False))
