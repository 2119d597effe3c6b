"""owl: outlier-weighted layerwise sparsity (Yin et al. 2023, arXiv 2310.05175). One pass over
the dense model measures each block's outlier ratio from its pooled Wanda scores; the ratios set
per-block sparsities (mean = the target, each within target +- lambda: solvers/owl.py); a second,
ordinary sequential pass prunes every block at its own sparsity with the base method."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...engine import BlockVisitor, LayerwiseEngine
from ...models.adapter import ModelAdapter
from .database import BASE_METHODS, Level, base_pruner
from ...solvers.owl import outlier_ratio, owl_sparsities
from ...solvers.scores import wanda_score
from ...solvers.stats import InputSquaredNorm
from ..base import Job, Method
from ..options import MethodConfig, option, require
from ..registry import register_method
from .sparsity import block_sizes


@dataclass
class OWLConfig(MethodConfig):
    """Outlier-weighted layerwise sparsity (Yin et al. 2023, arXiv 2310.05175)."""
    sparsity: float | None = option(None, "mean sparsity over the pruned parameters", default_text="none: give it")
    lam: float = option(0.08, "lambda: each block's sparsity stays within target +- lambda")
    outlier_m: float = option(5.0, "M: a score is an outlier above M times its block's mean")
    base: str = option("wanda", "method that prunes each block: wanda (OWL's) or sparsegpt", choices=tuple(BASE_METHODS))

    def __post_init__(self):
        require(self.sparsity is not None and 0 < self.sparsity < 1, "owl needs a {sparsity} in (0, 1)")
        require(self.base in BASE_METHODS, f"{{base}} {self.base}: choose {' or '.join(BASE_METHODS)}")
        require(self.outlier_m > 0, "{outlier_m} must be positive")
        owl_sparsities([0.0, 1.0], self.sparsity, self.lam)     # rejects a band outside [0, 1)


class OutlierRatios(BlockVisitor):
    """Per block, the outlier ratio of the pooled Wanda scores of its linears (dense model)."""
    modifies = False

    def __init__(self, adapter: ModelAdapter, m: float):
        self.adapter, self.m = adapter, m
        self.ratios: dict[int, float] = {}

    def observe(self, index, block):
        self.stats = {}
        for name, lin in self.adapter.block_linears(block).items():
            self.stats[name] = InputSquaredNorm(lin.in_features, device=lin.weight.device)
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


@register_method("owl", OWLConfig)
class OWL(Method):
    """Prunes the model in place, every block at its own sparsity."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return OWLConfig(sparsity=0.5)

    @torch.no_grad()
    def run(self, job: Job) -> nn.Module:
        cfg, adapter, ids, device, progress = self.config, self.adapter, job.input_ids, job.device, job.progress
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

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg, sp = meth["config"], meth["block_sparsity"]
        return [f"  method        owl sparsity {cfg['sparsity']:.4g} over {cfg['base']} (lambda {cfg['lam']}, M {cfg['outlier_m']})",
                f"  blocks        sparsity {min(sp):.4f}-{max(sp):.4f}, mean {meth['mean_block_sparsity']:.4f}"]

    @classmethod
    def describe(cls, report: dict) -> dict:
        cfg = report["method"]["config"]
        return {"method": f"owl-{cfg['base']}", "what": f"{cfg['sparsity']:.0%}",
                "x": (report.get("sparsity") or {}).get("overall", 0.0)}
