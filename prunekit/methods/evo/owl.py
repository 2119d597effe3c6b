"""owl: outlier-weighted layerwise sparsity (Yin et al. 2023, arXiv 2310.05175). One pass over
the dense model measures each block's outlier ratio from its pooled Wanda scores; the ratios set
per-block sparsities (mean = the target, each within target +- lambda: solvers/owl.py); a second,
ordinary sequential pass prunes every block at its own sparsity with the base method."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ...engine import BlockVisitor, LayerwiseEngine
from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from ...search.database import BASE_METHODS, Level, base_pruner
from ...solvers.owl import outlier_ratio, owl_sparsities
from ...solvers.scores import wanda_score
from ...solvers.stats import InputSquaredNorm
from .sparsity import block_sizes


@dataclass
class OWLConfig:
    sparsity: float | None = field(default=None, metadata={"help": "mean sparsity over the pruned parameters"})
    lam: float = field(default=0.08, metadata={"help": "lambda: each block's sparsity stays within target +- lambda"})
    outlier_m: float = field(default=5.0, metadata={"help": "M: a score is an outlier above M times its block's mean"})
    base: str = field(default="wanda", metadata={"help": "method that prunes each block: wanda (OWL's) or sparsegpt"})
    method: ClassVar[str] = "owl"

    def __post_init__(self):
        if self.sparsity is None or not 0 < self.sparsity < 1:
            raise PrunekitError("owl needs a --sparsity in (0, 1)")
        if self.base not in BASE_METHODS:
            raise PrunekitError(f"--base {self.base}: choose {' or '.join(BASE_METHODS)}")
        if not self.outlier_m > 0:
            raise PrunekitError("--outlier-m must be positive")
        owl_sparsities([0.0, 1.0], self.sparsity, self.lam)     # rejects a band outside [0, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class OutlierRatios(BlockVisitor):
    """Per block, the outlier ratio of the pooled Wanda scores of its linears (dense model)."""
    modifies = False

    def __init__(self, adapter: ModelAdapter, m: float):
        self.adapter, self.m = adapter, m
        self.ratios: dict[int, float] = {}

    def observe(self, index, block):
        self.stats = {}
        for name, lin in self.adapter.block_linears(block).items():
            self.stats[name] = acc = InputSquaredNorm(lin.in_features, device=lin.weight.device)
        return {lin: (lambda inp, out, acc=self.stats[name]: acc.add_batch(inp))
                for name, lin in self.adapter.block_linears(block).items()}

    def edit(self, index, block):
        scores = [wanda_score(lin.weight, self.stats[name].norm())
                  for name, lin in self.adapter.block_linears(block).items()]
        self.ratios[index] = outlier_ratio(scores, self.m)
        self.stats = {}


class PerBlockSparsity(BlockVisitor):
    """The base method's pruner, given each block's own sparsity."""

    def __init__(self, adapter, base: str, sparsities: list[float]):
        self.pruners = [base_pruner(base, Level(s), adapter) for s in sparsities]

    def observe(self, index, block):
        return self.pruners[index].observe(index, block)

    def edit(self, index, block):
        self.pruners[index].edit(index, block)


class OWL:
    """A whole-model method: run(ids, device, progress) prunes the model in place and returns it."""
    needs_calibration: ClassVar[bool] = True
    kind: ClassVar[str] = "model"

    def __init__(self, config: OWLConfig, adapter: ModelAdapter):
        self.config, self.adapter = config, adapter
        self.events: list[str] = []
        self.details: dict = {}

    def check(self) -> None:
        pass

    def summary(self) -> dict:
        return self.details

    @torch.no_grad()
    def run(self, ids: torch.Tensor, device: str = "cpu", progress: bool = True):
        cfg, adapter = self.config, self.adapter
        counter = OutlierRatios(adapter, cfg.outlier_m)
        LayerwiseEngine(adapter, device, progress=progress).run(ids, counter, desc="owl: outlier ratios")
        ratios = [counter.ratios[i] for i in range(adapter.num_layers)]
        sparsities = owl_sparsities(ratios, cfg.sparsity, cfg.lam, block_sizes(adapter))
        visitor = PerBlockSparsity(adapter, cfg.base, sparsities)
        LayerwiseEngine(adapter, device, progress=progress).run(ids, visitor, desc=f"owl: {cfg.base}")
        for p in visitor.pruners:
            self.events += p.events
        self.details.update(outlier_ratio=ratios, block_sparsity=sparsities,
                            mean_block_sparsity=sum(sparsities) / len(sparsities))
        return adapter.model
