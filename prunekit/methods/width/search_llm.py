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

Additions from the evolutionary searches (EvoPress, arXiv 2410.14649): KL fitness, staged
selection and the executors (evolve.py, fitness.py); and kept widths on a lattice of multiples
(`--width-multiple`), so that a searched model's matrices have sizes its kernels run fast on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ...engine import BlockVisitor, LayerwiseEngine
from ...errors import ConfigError
from ...models import decilm
from ...models.adapter import ModelAdapter
from ...scoring.executors import make_executor
from ...scoring.fitness import FITNESS_KINDS
from ...solvers.evolution import parse_stages
from ...solvers.stats import InputHessian
from ...solvers.width import admm_reform, attention_unit_scores, importance
from ..base import Job, Method
from ..options import DampedConfig, FitnessOptions, option, require
from ..registry import register_method
from .evolve import Plan, evolve_population
from .fitness import WidthFactory, width_evaluator
from .genome import Shape, Space
from .slicing import DenseWeights, KVFit, block_channels, shape_of, sliced_model, write_genome


REFORMS = ("admm", "admm-always", "none")
ATTENTION = ("within-heads", "kv-groups", "keep")
KV_FITS = ("weighted", "mean")


@dataclass
class SearchConfig(DampedConfig, FitnessOptions):
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
                                 "calibration data. admm: kept only if it lowers the search's own fitness on "
                                 "all its calibration windows, else the masked weights are kept (the report "
                                 "says which); admm-always: kept regardless (the paper's); none",
                         choices=REFORMS)
    rho: float = option(1.0, "ADMM penalty, relative to a unit-diagonal XXᵀ")
    admm_iters: int = option(30, "ADMM iterations")
    fitness: str = option("ppl", "candidate fitness: ppl (calibration perplexity, the paper's) or kl (mean KL "
                                 "from the dense model's next-token distribution, EvoPress's). Candidates are "
                                 "scored masked, before the reformation; see --reform",
                          choices=tuple(FITNESS_KINDS))
    fitness_windows: int = option(2, "calibration windows of the fixed fitness set: the whole search's without "
                                     "--stages, the reported initial and best fitness with")
    fitness_seqlen: int = option(256, "tokens of every fitness window (calibration windows cut to this length)")
    stages: str | None = option(None, "staged selection TOKENS:SURVIVORS,...: each generation's children are "
                                      "scored on TOKENS tokens of fresh random calibration windows, the best "
                                      "SURVIVORS go on; the parents join the last stage, which keeps --top-k",
                                default_text="none: every candidate on the fixed fitness set")
    width_multiple: int = option(1, "kept MLP widths and kept head dims are multiples of this (32 or 64: sizes "
                                    "the matrix kernels run fast on); a block left dense keeps its width")
    seed: int = option(0, "seed of the evolutionary search", flag="--search-seed")
    attention: str = option("within-heads", "how attention is cut. within-heads: every KV head keeps the same rotary "
                                            "pairs count per block (the paper's; saved in prunekit's layout, which "
                                            "serving engines do not read); kv-groups: every query head and dim kept, "
                                            "a block's KV heads merged to a divisor of them (servable: the "
                                            "Nemotron-NAS layout); keep: attention left whole, MLP widths only "
                                            "(servable)", choices=ATTENTION)
    kv_fit: str = option("weighted", "with --attention kv-groups, how a merged KV head is fitted: mean (of the old "
                                     "heads) or weighted (keys by their queries' energy per rotary pair, values "
                                     "through o_proj)", choices=KV_FITS)

    def __post_init__(self):
        super().__post_init__()
        require(0.0 < self.keep <= 1.0, f"{{keep}} {self.keep:g} is outside (0, 1]")
        for name in ("generations", "mutants", "crossovers", "randoms"):
            require(getattr(self, name) >= 0, f"{{{name}}} must be at least 0")
        for name in ("population", "top_k", "fitness_windows", "admm_iters"):
            require(getattr(self, name) >= 1, f"{{{name}}} must be at least 1")
        require(self.fitness_seqlen >= 2, "{fitness_seqlen} must be at least 2")
        require(self.score in ("importance", "magnitude"), f"{{score}} {self.score}: choose importance or magnitude")
        require(self.reform in REFORMS, f"{{reform}} {self.reform}: choose {', '.join(REFORMS)}")
        require(self.rho > 0 and self.band > 0, "{rho} and {band} must be positive")
        require(self.width_multiple >= 1, "{width_multiple} must be at least 1")
        require(self.attention in ATTENTION, f"{{attention}} {self.attention}: choose {', '.join(ATTENTION)}")
        require(self.kv_fit in KV_FITS, f"{{kv_fit}} {self.kv_fit}: choose {', '.join(KV_FITS)}")
        self.check_fitness(self.fitness)
        stages = self.stage_list()
        require(stages is None or stages[-1][1] == self.top_k,
                f"the last of {{stages}} {self.stages} keeps {stages and stages[-1][1]} survivors but {{top_k}} is "
                f"{self.top_k}: they are the next generation's parents, so they must agree")

    def stage_list(self) -> list[tuple[int, int]] | None:
        return None if self.stages is None else parse_stages(self.stages, last=None)


class _ImportanceScores(BlockVisitor):
    """Unit scores of every block from its input statistics (attention input, o_proj, MLP input,
    down_proj inputs); each block's statistics are dropped once its scores are computed."""
    modifies = False

    def __init__(self, adapter: ModelAdapter, shape: Shape, percdamp: float, q_energy: bool = False):
        self.adapter, self.shape, self.percdamp = adapter, shape, percdamp
        self.attn, self.mlp = {}, {}
        self.q_energy = {} if q_energy else None      # [heads, head_dim] mean squared query, for KV fits

    def observe(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        names = {"attn_in": self.adapter.role_rows("q")[0], "attn_out": r["o"], "mlp_in": self.adapter.spec.mlp_in[0],
                 "mlp_out": r["down"]}
        self.stats = {k: InputHessian(lins[n].in_features, lins[n].weight.device) for k, n in names.items()}
        return {lins[n]: input_only(self.stats[k]) for k, n in names.items()}

    def edit(self, index, block):
        self.attn[index], self.mlp[index] = block_unit_scores(self.adapter, block, self.shape, "importance",
                                                              self.percdamp, self.stats)
        if self.q_energy is not None:
            q = self.adapter.role(block, "q").weight.detach().double().cpu()
            energy = ((q @ self.stats["attn_in"].H.double().cpu()) * q).sum(1)     # diag(W_q H W_qᵀ)
            self.q_energy[index] = energy.reshape(self.shape.heads, -1)
        self.stats = None


def input_only(stat: InputHessian):
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

    def __init__(self, adapter, genome, shape, config, kv_fit=None):
        self.adapter, self.genome, self.shape, self.config, self.kv_fit = adapter, genome, shape, config, kv_fit
        self.residuals = {}

    def observe(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        self.h = {n: InputHessian(lins[n].in_features, lins[n].weight.device) for n in (r["o"], r["down"])}
        return {lins[n]: input_only(h) for n, h in self.h.items()}

    @torch.no_grad()
    def edit(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        ch = block_channels(self.genome, index, self.shape)
        dense = {n: lins[n].weight.detach().clone() for n in self.h}
        write_genome(self.adapter, lins, ch, index, self.shape, self.kv_fit)
        for name, keep in ((r["o"], ch["q"]), (r["down"], ch["mlp"])):
            omit = torch.ones(lins[name].in_features, dtype=torch.bool)
            omit[keep] = False
            w, res = admm_reform(dense[name].float().cpu(), self.h[name].H.cpu(), omit, self.config.rho,
                                 self.config.admm_iters)
            lins[name].weight.copy_(w.to(lins[name].weight.dtype))
            self.residuals[f"{index}.{name}"] = res[-1]


@register_method("search-llm", SearchConfig, aliases=("search",))
class SearchMethod(Method):
    """Searches and reforms on the dense model (left masked in `masked_model`), then returns a new,
    physically smaller model."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1,
                            top_k=2, band=0.05, fitness_seqlen=16, admm_iters=5)
    returns_new_model = True
    varies_block_widths = True

    def check(self) -> None:
        shape = shape_of(self.adapter, self.name)
        if self.config.attention == "kv-groups":
            reason = decilm.why_not(self.adapter)
            if reason is not None or self.adapter.spec.fused:
                raise ConfigError(f"{{attention}} kv-groups saves blocks in the Nemotron-NAS (DeciLM) layout, which "
                                  f"cannot state this model: {reason or 'fused projections'}")
        n = self.config.width_multiple
        head = min(shape.head_dim_of(b) for b in range(shape.layers))
        mlp = min(shape.intermediate_of(b) for b in range(shape.layers))
        if self.config.attention != "within-heads":       # head dims are not cut: the MLP alone must fit
            head = mlp
        if n > head or n > mlp:
            raise ConfigError(f"{{width_multiple}} {n} cannot fit: the model has head dim {head} and MLP width {mlp}; "
                              f"give at most {min(head, mlp)}")

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
        kv_groups = cfg.attention == "kv-groups"
        weighted = kv_groups and cfg.kv_fit == "weighted"
        q_energy = None
        if cfg.score == "importance" or weighted:
            scorer = _ImportanceScores(adapter, shape, cfg.percdamp, q_energy=weighted)
            LayerwiseEngine(adapter, device, progress=progress).run(ids, scorer, desc="search-llm: importance")
            attn_scores = [scorer.attn[b] for b in range(shape.layers)]
            mlp_scores = [scorer.mlp[b] for b in range(shape.layers)]
            q_energy = weighted and [scorer.q_energy[b] for b in range(shape.layers)] or None
        if cfg.score == "magnitude":
            scores = [block_unit_scores(adapter, b, shape, "magnitude", cfg.percdamp) for b in adapter.layers]
            attn_scores, mlp_scores = [a for a, _ in scores], [m for _, m in scores]
        space = Space.build(shape, cfg.keep, attn_scores, mlp_scores, cfg.search_depth,
                            prune_attention=cfg.attention == "within-heads", multiple=cfg.width_multiple,
                            kv_groups=kv_groups)
        kv_fit = KVFit(cfg.kv_fit, q_energy) if kv_groups else None
        dense_weights = DenseWeights(adapter, kv_fit)
        init = space.initial(cfg.keep, cfg.band)
        stages = cfg.stage_list()
        # the stages draw from every calibration window, the fixed set is the first windows
        pool = ids[:, :cfg.fitness_seqlen] if stages else ids[:cfg.fitness_windows, :cfg.fitness_seqlen]
        factory = WidthFactory(model, pool, shape, cfg.fitness, cfg.kl_topk, device, kv_fit)
        local = lambda: width_evaluator(model, pool, shape, cfg.fitness, cfg.kl_topk, device, dense_weights)
        plan = Plan(cfg.keep, cfg.band, cfg.generations, cfg.population, cfg.mutants, cfg.crossovers, cfg.randoms,
                    cfg.top_k, cfg.seed, stages, cfg.fitness_windows, pool.shape[0], cfg.fitness_seqlen)
        executor = make_executor(cfg.executor, cfg.workers, factory, local=local, threads=cfg.threads_per_worker)
        try:
            out = evolve_population(space, init, shape, plan, executor, progress)
        finally:
            executor.close()
        best = out.pop("best")
        out["search_s"] = time.perf_counter() - t0      # with the importance pass, as before
        dense_weights.restore()
        if cfg.reform == "none":
            dense_weights.apply(best, shape)
        else:
            self.details.update(self._reform(ids, pool, best, shape, dense_weights, device, progress))
        small = sliced_model(model, best, shape)
        self.details.update(
            genome=best.ratios(shape), kept_fraction=best.params(shape) / shape.dense_params,
            block_params_dense=shape.dense_params, block_params_kept=best.params(shape), **out,
            fitness=cfg.fitness, stages=stages, executor=executor.name, widths=best.widths(shape),
            fitness_protocol=f"first {cfg.fitness_windows} calibration windows x {cfg.fitness_seqlen} tokens")
        self.masked_model = model      # the masked dense model (what the small one computes)
        return small

    def _reform(self, ids, pool, best, shape, dense_weights, device, progress) -> dict:
        """ADMM on the best genome's output projections (the model must be dense on entry). With
        reform admm, the reformed weights must beat the masked ones on the search's own fitness
        over all its windows: on SmolLM2 ADMM raised a KL-searched mask's held-out KL from 1.62 to 3.67."""
        cfg, adapter = self.config, self.adapter
        guard, windows = None, list(range(pool.shape[0]))
        if cfg.reform == "admm":
            guard = width_evaluator(adapter.model, pool, shape, cfg.fitness, cfg.kl_topk, device, dense_weights)
            masked = guard.score([best], windows)[0]
            dense_weights.restore()
        dense_weights.set_depth(best.depth)
        reformer = _Reformer(adapter, best, shape, cfg, dense_weights.kv_fit)
        LayerwiseEngine(adapter, device, progress=progress).run(ids, reformer, desc="search-llm: ADMM reformation")
        out = {"admm_final_residual_max": max(reformer.residuals.values())}
        if guard is not None:
            reformed = guard.score_current(best.depth, windows)
            kept = reformed <= masked
            if not kept:
                dense_weights.apply(best, shape)
            out["reform_check"] = {"fitness_masked": masked, "fitness_reformed": reformed, "admm_kept": kept,
                                   "tokens": pool.numel()}
        return out

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg, g = meth["config"], meth["genome"]
        # reports written before --fitness name the perplexities *_ppl
        start, final = (meth.get(k, meth.get(old)) for k, old in (("initial_fitness", "initial_fitness_ppl"),
                                                                  ("final_fitness", "fitness_ppl")))
        how = meth["fitness_protocol"]
        if cfg.get("stages"):
            how = f"stages {cfg['stages']}; start and best on the {how}"
        lines = [f"  method        search keep {cfg['keep']} (kept {meth['kept_fraction']:.4f} of block projections; "
                 f"score {cfg['score']}, reform {cfg['reform']}, {cfg['generations']} generations)",
                 f"  fitness       {meth.get('fitness', 'ppl')} {start:.4g} (initialisation) -> {final:.4g} "
                 f"(best; {meth['evaluations']} evaluations, {how}; executor {meth.get('executor', 'in-process')})",
                 f"  ratios        attention {min(g['attn']):.3f}-{max(g['attn']):.3f}, "
                 f"MLP {min(g['mlp']):.3f}-{max(g['mlp']):.3f}, depth {g['depth']}"]
        check = meth.get("reform_check")
        if check:
            lines.append(f"  reformation   ADMM {'kept' if check['admm_kept'] else 'dropped'}: fitness "
                         f"{check['fitness_masked']:.4g} masked -> {check['fitness_reformed']:.4g} reformed "
                         f"({check['tokens']} calibration tokens)")
        if meth.get("widths"):
            w = meth["widths"]
            lines.append(f"  widths        multiple {cfg.get('width_multiple', 1)}: head dims {min(w['head_dim'])}-"
                         f"{max(w['head_dim'])}, MLP {min(w['mlp'])}-{max(w['mlp'])}")
        return lines

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        from ...plots import plot_search_history
        meth = report["method"]
        plot_search_history(meth["history"], Path(folder) / "search_history.png",
                            f"search-llm, keep {meth['config']['keep']}, {report['model']['source']}",
                            meth.get("fitness", "ppl"))
        return ["search_history.png"]

    @classmethod
    def describe(cls, report: dict) -> dict:
        meth = report["method"]
        cfg = meth["config"]
        multiple = cfg.get("width_multiple", 1)
        return {"method": "search" + ("" if cfg.get("generations") else "-init") +
                          ("-magnitude" if cfg.get("score") == "magnitude" else "") +
                          ("-noreform" if cfg.get("reform") == "none" else "") +
                          ("-kl" if cfg.get("fitness") == "kl" and cfg.get("generations") else "") +
                          (f"-x{multiple}" if multiple > 1 else ""),
                "what": f"keep {meth['kept_fraction']:.3f} of block weights", "x": 1.0 - meth["kept_fraction"]}
