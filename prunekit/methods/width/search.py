"""search-llm (Shen et al. 2024, "Search for Efficient Large Language Models", NeurIPS 2024,
arXiv 2409.17372; docs/methods.md): importance-initialised structured sub-network, evolutionary
search under a parameter band, ADMM reformation of the output-side projections, and a
physically smaller model.

Deviations from the paper, deliberate: one attention ratio per block (every KV head keeps the
same number of rotary pairs, so heads stay rectangular without padding; each head keeps its own
pairs); mask units are rotary pairs of a KV head shared by its query group (GQA and RoPE stay
exact); mask mutation uses the constructive sampler (6.3); the parameter count covers the block
projections only (not lm_head); fitness is perplexity on the first calibration windows rather
than WikiText-2 train; population sizes default to a small CPU run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...engine import BlockVisitor, LayerwiseEngine
from ...errors import ConfigError, PrunekitError
from ...models.adapter import ModelAdapter
from ...models.plumbing import on_device
from ...solvers.stats import InputHessian
from ...solvers.width import admm_reform, attention_unit_scores, importance
from ..base import Job, Method
from ..options import option, require
from ..registry import register_method
from ..sparsity.sparsegpt import DampedConfig
from .genome import Genome, Space, Shape, crossover
from .slicing import DenseWeights, block_channels, keep_producer_rows, shape_of, sliced_model

# the paper's mutation probabilities: generation 0 / large-randomness, and ordinary mutants
P_RATIO0, P_MASK0 = 0.3, 0.6
P_DEPTH, P_RATIO, P_MASK = 0.1, 0.1, 0.3


@dataclass
class SearchConfig(DampedConfig):
    keep: float = option(0.8, "kept fraction of the decoder-block projection parameters")
    generations: int = option(5, "evolution rounds after generation 0 (0 = importance initialisation alone)")
    population: int = option(16, "generation-0 candidates (paper 100)")
    mutants: int = option(8, "mutants per generation (paper 50)")
    crossovers: int = option(4, "crossovers per generation (paper 30)")
    randoms: int = option(4, "large-randomness mutants per generation (paper 20)")
    top_k: int = option(4, "survivors per generation (paper 10)")
    band: float = option(0.01, "candidates must keep keep ± band of the block parameters")
    search_depth: bool = option(False, "also search how many leading blocks to keep (paper table 1 bounds)")
    score: str = option("importance", "unit scores: importance (the paper's W²/[(2XXᵀ)⁻¹]_jj) or magnitude "
                                      "(weight norms: the structured-magnitude baseline)",
                        choices=("importance", "magnitude"))
    reform: str = option("admm", "ADMM reformation of the attention and MLP output projections from the "
                                 "calibration data", choices=("admm", "none"))
    rho: float = option(1.0, "ADMM penalty, relative to a unit-diagonal XXᵀ")
    admm_iters: int = option(30, "ADMM iterations")
    fitness_windows: int = option(2, "calibration windows the fitness perplexity uses")
    fitness_seqlen: int = option(256, "their length in tokens")
    seed: int = option(0, "seed of the evolutionary search", flag="--search-seed")

    def __post_init__(self):
        super().__post_init__()
        require(0.0 < self.keep <= 1.0, f"{{keep}} {self.keep:g} is outside (0, 1]")
        for name in ("generations", "mutants", "crossovers", "randoms"):
            require(getattr(self, name) >= 0, f"{{{name}}} must be at least 0")
        for name in ("population", "top_k", "fitness_windows", "admm_iters"):
            require(getattr(self, name) >= 1, f"{{{name}}} must be at least 1")
        require(self.fitness_seqlen >= 2, "{fitness_seqlen} must be at least 2")
        require(self.score in ("importance", "magnitude"), f"{{score}} {self.score}: choose importance or magnitude")
        require(self.reform in ("admm", "none"), f"{{reform}} {self.reform}: choose admm or none")
        require(self.rho > 0 and self.band > 0, "{rho} and {band} must be positive")


class _ImportanceScores(BlockVisitor):
    """Unit scores of every block from its input statistics (attention input, o_proj, MLP input,
    down_proj inputs); each block's statistics are dropped once its scores are computed."""
    modifies = False

    def __init__(self, adapter: ModelAdapter, shape: Shape, percdamp: float):
        self.adapter, self.shape, self.percdamp = adapter, shape, percdamp
        self.attn, self.mlp = {}, {}

    def observe(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        names = {"attn_in": self.adapter.role_rows("q")[0], "attn_out": r["o"], "mlp_in": self.adapter.spec.mlp_in[0],
                 "mlp_out": r["down"]}
        self.stats = {k: InputHessian(lins[n].in_features, lins[n].weight.device) for k, n in names.items()}
        return {lins[n]: _input_only(self.stats[k]) for k, n in names.items()}

    def edit(self, index, block):
        self.attn[index], self.mlp[index] = block_unit_scores(self.adapter, block, self.shape, "importance",
                                                              self.percdamp, self.stats)
        self.stats = None


def _input_only(stat: InputHessian):
    """The engine's hooks get (input, output); the statistics need the input only."""
    return lambda inp, out: stat.add_batch(inp)


def block_unit_scores(adapter: ModelAdapter, block, shape: Shape, score: str, percdamp: float, stats=None):
    """(attention unit scores [kv_heads, pairs], MLP channel scores [intermediate]) of one block:
    summed importance (or squared weight norms) over the rows of the producers and the columns
    of the consumer of each unit."""
    r = adapter.spec.roles
    lins = adapter.block_linears(block)

    def rows_cols(name, key):
        w = lins[name].weight.float().cpu()
        if score == "magnitude":
            return w.double().square().sum(1), w.double().square().sum(0)
        return importance(w, stats[key].H.cpu(), percdamp)

    def role_rows(role, key):      # a fused matrix's scores are per row: take the role's rows
        name, rows = adapter.role_rows(role)
        return rows_cols(name, key)[0][rows]
    q, k, v = (role_rows(role, "attn_in") for role in ("q", "k", "v"))
    o = rows_cols(r["o"], "attn_out")[1]
    head_dim = k.numel() // shape.kv_heads      # this block's (narrower after a width stage)
    attn = attention_unit_scores(q, k, v, o, shape.heads, shape.kv_heads, head_dim, shape.rotary)
    mlp = sum(role_rows(role, "mlp_in") for role in adapter.ffn_in_roles) + rows_cols(r["down"], "mlp_out")[1]
    return attn, mlp


class _Reformer(BlockVisitor):
    """Sequentially: statistics of o_proj and down_proj inputs with the block still dense (the
    earlier blocks already pruned), then the block's masks, then ADMM on the two projections."""

    def __init__(self, adapter, genome, shape, config):
        self.adapter, self.genome, self.shape, self.config = adapter, genome, shape, config
        self.residuals = {}

    def observe(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        self.h = {n: InputHessian(lins[n].in_features, lins[n].weight.device) for n in (r["o"], r["down"])}
        return {lins[n]: _input_only(h) for n, h in self.h.items()}

    @torch.no_grad()
    def edit(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        ch = block_channels(self.genome, index, self.shape)
        dense = {n: lins[n].weight.detach().clone() for n in self.h}
        keep_producer_rows(self.adapter, lins, ch)
        for name, keep in ((r["o"], ch["q"]), (r["down"], ch["mlp"])):
            omit = torch.ones(lins[name].in_features, dtype=torch.bool)
            omit[keep] = False
            w, res = admm_reform(dense[name].float().cpu(), self.h[name].H.cpu(), omit, self.config.rho,
                                 self.config.admm_iters)
            lins[name].weight.copy_(w.to(lins[name].weight.dtype))
            self.residuals[f"{index}.{name}"] = res[-1]


@register_method("search", SearchConfig)
class SearchMethod(Method):
    """Searches and reforms on the dense model (left masked in `masked_model`), then returns a new,
    physically smaller model."""
    returns_new_model = True
    varies_block_widths = True

    def check(self) -> None:
        shape_of(self.adapter, self.name)

    def run(self, job: Job) -> nn.Module:
        return self._run(job.input_ids, job.device, job.progress)

    def _run(self, ids: torch.Tensor, device: str, progress: bool) -> nn.Module:
        cfg, adapter, model = self.config, self.adapter, self.adapter.model
        shape = shape_of(adapter, self.name)
        if ids.shape[0] < cfg.fitness_windows or ids.shape[1] < cfg.fitness_seqlen:
            raise ConfigError(f"fitness needs {cfg.fitness_windows} x {cfg.fitness_seqlen} tokens "
                              f"({{fitness_windows}} x {{fitness_seqlen}}) but calibration has {ids.shape[0]} x "
                              f"{ids.shape[1]} ({{nsamples}} x {{seqlen}}): lower the first or raise the second")
        t0 = time.perf_counter()
        if cfg.score == "importance":
            scorer = _ImportanceScores(adapter, shape, cfg.percdamp)
            LayerwiseEngine(adapter, device, progress=progress).run(ids, scorer, desc="search: importance")
            attn_scores = [scorer.attn[b] for b in range(shape.layers)]
            mlp_scores = [scorer.mlp[b] for b in range(shape.layers)]
        else:
            scores = [block_unit_scores(adapter, b, shape, "magnitude", cfg.percdamp) for b in adapter.layers]
            attn_scores, mlp_scores = [a for a, _ in scores], [m for _, m in scores]
        space = Space.build(shape, cfg.keep, attn_scores, mlp_scores, cfg.search_depth)
        dense_weights = DenseWeights(adapter)
        fit_ids = ids[:cfg.fitness_windows, :cfg.fitness_seqlen]
        cache: dict[bytes, float] = {}

        @torch.no_grad()
        def fitness(genomes: list[Genome]) -> list[float]:
            """Perplexity of each candidate on the fitness windows (cached per genome)."""
            out = []
            for g in genomes:
                k = g.key()
                if k not in cache:
                    dense_weights.apply(g, shape)
                    with on_device(model, device):
                        logits = model(fit_ids.to(device), use_cache=False).logits[:, :-1].float()
                        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              fit_ids[:, 1:].reshape(-1).to(device))
                    cache[k] = math.exp(nll.item())
                out.append(cache[k])
            return out

        init = space.initial(cfg.keep)
        best, history = self._evolve(space, init, fitness, shape, progress)
        search_s = time.perf_counter() - t0
        dense_weights.restore()
        dense_weights.set_depth(best.depth)
        if cfg.reform == "admm":
            reformer = _Reformer(adapter, best, shape, cfg)
            LayerwiseEngine(adapter, device, progress=progress).run(ids, reformer, desc="search: ADMM reformation")
            self.details["admm_final_residual_max"] = max(reformer.residuals.values())
        else:
            dense_weights.apply(best, shape)
        small = sliced_model(model, best, shape)
        self.details.update(
            genome=best.ratios(shape), kept_fraction=best.params(shape) / shape.dense_params,
            block_params_dense=shape.dense_params, block_params_kept=best.params(shape),
            fitness_ppl=fitness([best])[0], initial_fitness_ppl=fitness([init])[0], history=history,
            evaluations=len(cache), search_s=search_s,
            fitness_protocol=f"first {cfg.fitness_windows} calibration windows x {cfg.fitness_seqlen} tokens")
        self.masked_model = model      # the masked dense model (what the small one computes)
        return small

    def _evolve(self, space: Space, init: Genome, fitness, shape: Shape, progress: bool):
        cfg = self.config
        dense = shape.dense_params
        legal = lambda g: abs(g.params(shape) / dense - cfg.keep) <= cfg.band + 1e-12
        if not legal(init):
            raise PrunekitError(f"the uniform initialisation keeps {init.params(shape) / dense:.4f} of the block "
                                f"parameters, outside keep {cfg.keep} ± band {cfg.band}: widen --band")
        history = [{"generation": "init", "best_ppl": fitness([init])[0], "mean_ppl": fitness([init])[0],
                    "evaluated": 1}]
        if cfg.generations == 0:
            return init, history
        gen = torch.Generator().manual_seed(cfg.seed)
        seen = {init.key()}

        def kept_range(genomes):
            fr = [x.params(shape) / dense for x in genomes]
            return {"kept_min": min(fr), "kept_max": max(fr)} if fr else {}

        def spawn(make, n):
            out, tries = [], 0
            while len(out) < n and tries < 200 * n:
                tries += 1
                c = make()
                if c is not None and legal(c) and c.key() not in seen:
                    seen.add(c.key())
                    out.append(c)
            return out

        pick = lambda xs: xs[int(torch.randint(len(xs), (), generator=gen))]
        pop = [init] + spawn(lambda: space.mutate(init, 0.0, P_RATIO0, P_MASK0, gen), cfg.population - 1)
        scores = fitness(pop)
        ranked = sorted(zip(scores, range(len(pop))), key=lambda t: t[0])
        parents = [pop[i] for _, i in ranked[:cfg.top_k]]
        pscores = [s for s, _ in ranked[:cfg.top_k]]
        history.append({"generation": 0, "best_ppl": pscores[0], "mean_ppl": sum(scores) / len(scores),
                        "evaluated": len(pop), **kept_range(pop)})
        bar = tqdm(range(1, cfg.generations + 1), desc="search: generations", unit="gen",
                   disable=None if progress else True)
        for g in bar:
            def cross():
                a = pick(parents)
                mates = [p for p in parents if p.depth == a.depth and p is not a]
                return crossover(a, pick(mates), gen) if mates else None
            children = (spawn(lambda: space.mutate(pick(parents), P_DEPTH, P_RATIO, P_MASK, gen), cfg.mutants)
                        + spawn(cross, cfg.crossovers)
                        + spawn(lambda: space.mutate(pick(parents), P_DEPTH, P_RATIO0, P_MASK0, gen), cfg.randoms))
            cscores = fitness(children)
            pool = sorted(zip(pscores + cscores, range(len(parents) + len(children))), key=lambda t: t[0])
            everyone = parents + children
            parents = [everyone[i] for _, i in pool[:cfg.top_k]]
            pscores = [s for s, _ in pool[:cfg.top_k]]
            row = {"generation": g, "best_ppl": pscores[0],
                   "mean_ppl": sum(cscores) / len(cscores) if cscores else None, "evaluated": len(children),
                   **kept_range(children)}
            history.append(row)
            bar.set_postfix(best=f"{pscores[0]:.3f}", mean=f"{row['mean_ppl'] or float('nan'):.3f}")
            tqdm.write(f"generation {g}: best fitness ppl {pscores[0]:.4f}, mean of {len(children)} children "
                       f"{row['mean_ppl'] or float('nan'):.4f}") if progress else None
        return parents[0], history

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg, g = meth["config"], meth["genome"]
        return [f"  method        search keep {cfg['keep']} (kept {meth['kept_fraction']:.4f} of block projections; "
                f"score {cfg['score']}, reform {cfg['reform']}, {cfg['generations']} generations)",
                f"  fitness       ppl {meth['initial_fitness_ppl']:.3f} (initialisation) -> {meth['fitness_ppl']:.3f} "
                f"(best; {meth['evaluations']} candidates, {meth['fitness_protocol']})",
                f"  ratios        attention {min(g['attn']):.3f}-{max(g['attn']):.3f}, "
                f"MLP {min(g['mlp']):.3f}-{max(g['mlp']):.3f}, depth {g['depth']}"]

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        from ...plots import plot_search_history
        meth = report["method"]
        plot_search_history(meth["history"], Path(folder) / "search_history.png",
                            f"search-llm, keep {meth['config']['keep']}, {report['model']['source']}")
        return ["search_history.png"]

    @classmethod
    def describe(cls, report: dict) -> dict:
        meth = report["method"]
        cfg = meth["config"]
        return {"method": "search" + ("" if cfg.get("generations") else "-init") +
                          ("-magnitude" if cfg.get("score") == "magnitude" else "") +
                          ("-noreform" if cfg.get("reform") == "none" else ""),
                "what": f"keep {meth['kept_fraction']:.3f} of block weights", "x": 1.0 - meth["kept_fraction"]}
