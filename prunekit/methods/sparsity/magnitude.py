"""Magnitude pruning: per layer, keep the largest |W| (no data, no update)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...solvers.masks import sparsity_mask
from ...solvers.scores import magnitude_score
from ..base import LayerwiseMethod, SparsityConfig, apply_mask


@dataclass
class MagnitudeConfig(SparsityConfig):
    method: ClassVar[str] = "magnitude"


class MagnitudePruner(LayerwiseMethod):
    needs_calibration = False

    def edit(self, index, block):
        for lin in self.linears(block).values():
            keep = sparsity_mask(magnitude_score(lin.weight), self.config.sparsity, self.config.nm, per_row=False)
            apply_mask(lin, keep)
