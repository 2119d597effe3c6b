"""evo-depth: which K decoder blocks to drop, by EvoPress's level-switch search (swap a dropped
and a kept block) started from ShortGPT's choice, scored by KL to the dense model (or
calibration perplexity) with staged selection. Whole blocks are dropped, so the result is
physically smaller through the common depth path (DepthState). With `unit="sublayer"` the units
are each block's attention and MLP (k of the 2n go), as BlockPruner and FinerCut remove them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from ...scoring.executors import make_executor
from ...scoring.fitness import DepthEvaluator
from ..depth.base import DepthConfig, DepthMethod, DepthState, UnitOption, check_sublayer_units
from ...engine.stack import BlockStack
from ..options import require
from ..registry import register_method
from .config import EvoSearchOptions
from .driver import evolution_figure, run_search

DEPTH_STAGES = "2048:2,32768:1"     # the EvoPress repository's depth defaults
DEPTH_OFFSPRING = 32


@dataclass
class EvoDepthConfig(DepthConfig, UnitOption, EvoSearchOptions):
    def __post_init__(self):
        super().__post_init__()
        self.check_unit()
        self.check_search()


class DepthFactory:
    """Builds a depth evaluator in a worker from the model and calibration ids (picklable)."""

    def __init__(self, model, ids, kind: str, topk: int, device: str = "cpu", batch_tokens: int = 4096,
                 sublayers: bool = False):
        self.model, self.ids, self.kind, self.topk = model, ids, kind, topk
        self.device, self.batch_tokens, self.sublayers = device, batch_tokens, sublayers

    def __call__(self) -> DepthEvaluator:
        self.model.config.use_cache = False
        stack = BlockStack(ModelAdapter(self.model), self.ids, self.device, self.batch_tokens)
        return DepthEvaluator(stack, self.kind, self.topk, sublayers=self.sublayers)


def shortgpt_choice(bi: list[float], k: int) -> tuple:
    """0/1 per unit: the k units (blocks, or sublayers) of lowest block influence (ShortGPT) dropped."""
    drop = set(sorted(range(len(bi)), key=lambda i: (bi[i], i))[:k])
    return tuple(int(i in drop) for i in range(len(bi)))


@register_method("evo-depth", EvoDepthConfig)
class EvoDepth(DepthMethod):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return EvoDepthConfig(remove_layers=2, stages="32:2,64:1", generations=2, offspring=2)

    @classmethod
    def builds_new_model(cls, config) -> bool | None:
        return None if config.unit == "sublayer" else False

    def check(self) -> None:
        cfg = self.config
        require(cfg.target(cfg.units_in(self.adapter.num_layers)) is not None,
                "evo-depth needs {remove_layers} or {ratio}")
        if cfg.unit == "sublayer":
            check_sublayer_units(self, cfg.target(cfg.units_in(self.adapter.num_layers)))
        else:
            super().check()

    def search(self, stack: BlockStack, state: DepthState, progress: bool = True) -> None:
        cfg = self.config
        n = len(state)
        if n != self.adapter.num_layers:
            raise PrunekitError("evo-depth runs on the original stack of blocks")
        sublayers = cfg.unit == "sublayer"
        units = cfg.units_in(n)
        k = cfg.target(units)
        ids = stack.input_ids
        factory = DepthFactory(self.adapter.model, ids, cfg.fitness, cfg.kl_topk, str(stack.engine.device),
                               stack.batch * ids.shape[1], sublayers)
        local = DepthEvaluator(stack, cfg.fitness, cfg.kl_topk, sublayers=sublayers)
        bi = local.block_influence
        initial = shortgpt_choice(bi, k)
        generations = cfg.generations if cfg.generations is not None else math.ceil(k * (units - k) / 1.5)
        children = cfg.offspring if cfg.offspring is not None else DEPTH_OFFSPRING
        executor = make_executor(cfg.executor, cfg.workers, factory, local=lambda: local,
                                 threads=cfg.threads_per_worker)
        try:
            out = run_search(cfg, initial, 2, executor, ids.shape[0], ids.shape[1], DEPTH_STAGES, generations,
                             children, progress, desc="evo-depth generations")
        finally:
            executor.close()
        drop = [i for i, v in enumerate(out["best"]) if v]
        self.details.update({k_: v for k_, v in out.items() if k_ != "best"})
        if sublayers:
            unit = lambda u: [u // 2, ("attention", "mlp")[u % 2]]
            for u in drop:
                state.remove_part(state.position(u // 2), unit(u)[1])
            self.details.update(removed_units=[unit(u) for u in drop],
                                shortgpt_removed=[unit(u) for u, v in enumerate(initial) if v],
                                block_influence={f"{u // 2}.{unit(u)[1]}": v for u, v in enumerate(bi)})
            return
        for i in sorted(drop, reverse=True):
            state.remove(i)
        self.details.update(removed=drop, shortgpt_removed=[i for i, v in enumerate(initial) if v],
                            block_influence=bi)

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        return super().summary_lines(report) + [
            f"  search        {meth['fitness']} {meth['initial_fitness']:.4f} (ShortGPT's choice) -> "
            f"{meth['final_fitness']:.4f} (best; {meth['evaluations']} evaluations, {meth['generations']} generations, "
            f"{meth['fitness_tokens']} tokens, executor {meth['executor']})"]

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        return evolution_figure(report, folder, "ShortGPT's choice")
