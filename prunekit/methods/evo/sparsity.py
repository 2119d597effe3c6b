"""evo-sparsity: per-block sparsity levels whose mean is the target, by EvoPress's level-switch
search over a database of every block pruned at a grid of levels (SparseGPT or Wanda), started
from the uniform allocation and scored by KL to the dense model (or calibration perplexity).

Levels are an arithmetic grid around the target (target +- span * step, inside [0, 0.99]), or,
with an N:M pattern, the patterns n:M around it (sparsity 1 - n/M, also arithmetic). A level
switch moves one block up a step and another down a step, so the mean sparsity over blocks stays
exactly the target; blocks of a Llama- or OPT-style model are all the same size, so that is the
mean over pruned parameters (a model with unequal blocks is refused)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from .database import BASE_METHODS, DATABASE_INPUTS, DatabaseLoader, Level, SparsityDatabase
from ...scoring.executors import make_executor
from ...scoring.fitness import AssembledEvaluator
from ...solvers.masks import parse_pattern
from ..base import Job, Method
from ...engine.stack import BlockStack
from ..options import option, require
from ..registry import register_method
from .config import EvoSearchOptions
from .driver import evolution_figure, run_search

SPARSITY_STAGES = "2048:8,16384:2,65536:1"     # the EvoPress repository's sparsity defaults
SPARSITY_OFFSPRING = 64
SPARSITY_GENERATIONS = 400


@dataclass
class EvoSparsityConfig(EvoSearchOptions):
    """Per-block sparsity levels from a database of blocks pruned at a grid of levels."""
    sparsity: float | None = option(None, "mean sparsity over the pruned parameters (implied by --pattern)",
                                    default_text="none: give it or a pattern")
    base: str = option("sparsegpt", "method that fills the database (evo-sparsity) or prunes each block (owl)",
                       choices=tuple(BASE_METHODS))
    pattern: str | None = option(None, "N:M target (N kept of M); the levels are then the patterns n:M around it")
    level_step: float = option(0.1, "spacing of the unstructured sparsity levels")
    level_span: int = option(2, "levels on each side of the target")
    database_dir: str | None = option(None, "where databases are kept", default_text="the prunekit cache, evo-db/")
    database_inputs: str = option("uniform", "inputs each block is pruned on when the database is built: uniform "
                                  "(the outputs of the blocks before it pruned at the target, as sequential "
                                  "pruning; the start is then exactly the uniform model) or dense (the dense "
                                  "model's; entries independent of each other)", choices=DATABASE_INPUTS)

    def __post_init__(self):
        self.check_search()
        nm = parse_pattern(self.pattern)
        if nm is not None:
            implied = 1 - nm[0] / nm[1]
            require(self.sparsity is None or abs(self.sparsity - implied) <= 1e-6,
                    f"{{sparsity}} {self.sparsity} disagrees with pattern {self.pattern} ({implied:g})")
            self.sparsity, self.pattern = implied, f"{nm[0]}:{nm[1]}"
        require(self.sparsity is not None and 0 < self.sparsity < 1,
                "evo-sparsity needs a {sparsity} in (0, 1) or an N:M {pattern}")
        require(self.base in BASE_METHODS, f"{{base}} {self.base}: choose {' or '.join(BASE_METHODS)}")
        require(self.database_inputs in DATABASE_INPUTS,
                f"{{database_inputs}} {self.database_inputs}: choose {' or '.join(DATABASE_INPUTS)}")
        require(self.level_span >= 1 and self.level_step > 0,
                "{level_span} must be at least 1 and {level_step} positive")

    def levels(self) -> tuple[list[Level], int]:
        """The level grid and the index of the target in it."""
        nm = parse_pattern(self.pattern)
        if nm is not None:
            n, m = nm
            kept = [j for j in range(n + self.level_span, n - self.level_span - 1, -1) if 1 <= j < m]
            return [Level(1 - j / m, f"{j}:{m}") for j in kept], kept.index(n)
        grid = [round(self.sparsity + d * self.level_step, 6) for d in range(-self.level_span, self.level_span + 1)]
        grid = [s for s in grid if 0 <= s <= 0.99]
        return [Level(s) for s in grid], grid.index(round(self.sparsity, 6))


class SparsityFactory:
    """Builds an assembled-candidate evaluator in a worker (picklable)."""

    def __init__(self, model, ids, db_root, kind, topk, device="cpu"):
        self.model, self.ids, self.db_root, self.kind, self.topk, self.device = model, ids, str(db_root), kind, topk, device

    def __call__(self) -> AssembledEvaluator:
        self.model.config.use_cache = False
        stack = BlockStack(ModelAdapter(self.model), self.ids, self.device)
        return AssembledEvaluator(stack, DatabaseLoader(self.db_root), self.kind, self.topk)


def block_sizes(adapter: ModelAdapter) -> list[int]:
    return [sum(lin.weight.numel() for lin in adapter.block_linears(b).values()) for b in adapter.layers]


@register_method("evo-sparsity", EvoSparsityConfig)
class EvoSparsity(Method):
    """Prunes the model in place: every block at its searched level."""

    @classmethod
    def example_config(cls, database_dir=None):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return EvoSparsityConfig(sparsity=0.5, base="wanda", stages="32:2,64:1", generations=2, offspring=2,
                                 database_dir=database_dir)

    def check(self) -> None:
        if len(set(block_sizes(self.adapter))) != 1:
            raise PrunekitError("evo-sparsity needs decoder blocks of equal size (the level mean is the parameter mean)")
        nm = parse_pattern(self.config.pattern)
        if nm:
            for name, lin in self.adapter.all_linears():
                if lin.in_features % nm[1]:
                    raise PrunekitError(f"{name} has input dimension {lin.in_features}, not divisible by M={nm[1]}")

    def run(self, job: Job) -> nn.Module:
        return self._run(job.input_ids, job.device, job.progress)

    @torch.no_grad()
    def _run(self, ids: torch.Tensor, device: str, progress: bool):
        cfg, adapter = self.config, self.adapter
        model = adapter.model
        levels, start = cfg.levels()
        options = {} if cfg.base == "wanda" else {"blocksize": 128, "percdamp": 0.01}
        db, built = SparsityDatabase.open_or_build(adapter, ids, cfg.base, levels, options, cfg.database_dir,
                                                   device, progress, cfg.database_inputs, start)
        self.events += db_events(db)
        factory = SparsityFactory(model, ids, db.root, cfg.fitness, cfg.kl_topk, device)
        n = adapter.num_layers
        initial = tuple([start] * n)
        generations = cfg.generations if cfg.generations is not None else SPARSITY_GENERATIONS
        children = cfg.offspring if cfg.offspring is not None else SPARSITY_OFFSPRING
        local = None
        if cfg.workers == 1 and cfg.executor == "local":
            stack = BlockStack(adapter, ids, device)
            local = AssembledEvaluator(stack, db.load_into, cfg.fitness, cfg.kl_topk)
        executor = make_executor(cfg.executor, cfg.workers, factory, local=(lambda: local) if local else None,
                                 threads=cfg.threads_per_worker)
        try:
            out = run_search(cfg, initial, len(levels), executor, ids.shape[0], ids.shape[1], SPARSITY_STAGES,
                             generations, children, progress, desc="evo-sparsity generations")
        finally:
            executor.close()
        for i, level in enumerate(out["best"]):
            db.load_into(i, level, adapter.layers[i])
        chosen = [levels[v] for v in out["best"]]
        self.details.update({k: v for k, v in out.items() if k != "best"})
        self.details.update(
            levels=[lv.label() for lv in levels], block_levels=[lv.label() for lv in chosen],
            block_sparsity=[lv.sparsity for lv in chosen],
            mean_level_sparsity=sum(lv.sparsity for lv in chosen) / n,
            database={"path": str(db.root), "bytes": db.size_bytes(), "built_now": built, "base": cfg.base,
                      "inputs": cfg.database_inputs})
        return model

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg = meth["config"]
        target = cfg["pattern"] or f"{cfg['sparsity']:.4g}"
        return [f"  method        evo-sparsity {target} over {cfg['base']} (levels {', '.join(meth['levels'])})",
                f"  blocks        {' '.join(meth['block_levels'])}",
                f"  search        {meth['fitness']} {meth['initial_fitness']:.4f} (uniform) -> "
                f"{meth['final_fitness']:.4f} (best; {meth['evaluations']} evaluations, {meth['generations']} "
                f"generations, executor {meth['executor']}); database {meth['database']['bytes'] / 1e6:.1f} MB, "
                f"{meth['database'].get('inputs', 'dense')} inputs"]

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        return evolution_figure(report, folder, "uniform")

    @classmethod
    def describe(cls, report: dict) -> dict:
        cfg = report["method"]["config"]
        return {"method": f"evo-sparsity-{cfg['base']}", "what": cfg["pattern"] or f"{cfg['sparsity']:.0%}",
                "x": (report.get("sparsity") or {}).get("overall", 0.0)}


def db_events(db: SparsityDatabase) -> list[str]:
    import json
    return json.loads((db.root / "meta.json").read_text()).get("events", [])
