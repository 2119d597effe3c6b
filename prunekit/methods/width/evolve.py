"""search-llm's population loop: generation 0 mutates the initialisation into a population; each
later generation adds mutants, crossovers and large-randomness mutants of the parents, and the
best `top_k` of parents and children become the next parents. Selection is the evolutionary
methods' staged selection (solvers/evolution.py): children are scored on a first token budget,
the best re-scored on larger ones, and the parents join the last stage (elitism). Without
stages there is one stage on fixed windows, which is the paper's loop.

Fitness runs through an executor and is cached per (genome, windows): a parent re-scored on
the windows it was already scored on costs nothing.

The result is the best genome seen by its score on the fixed set (the first `fixed_windows`
windows), never worse there than the initialisation: each generation's winner is scored on it
(free without stages, where the fixed set is the stage set; with stages one extra evaluation
per new winner), and replaces the best so far only when strictly better."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import PrunekitError
from ...solvers.evolution import BestSoFar, draw_windows, staged_selection
from .genome import Genome, Shape, Space, crossover
from ...progress import bar as progress_bar

# the paper's mutation probabilities: generation 0 / large-randomness, and ordinary mutants
P_RATIO0, P_MASK0 = 0.3, 0.6
P_DEPTH, P_RATIO, P_MASK = 0.1, 0.1, 0.3


@dataclass
class Plan:
    """What the loop needs of the config."""
    keep: float
    band: float
    generations: int
    population: int
    mutants: int
    crossovers: int
    randoms: int
    top_k: int
    seed: int
    stages: list[tuple[int, int]] | None    # None: one stage on the fixed windows
    fixed_windows: int                      # windows 0..n-1 of the pool: the fixed set
    pool_windows: int                       # windows the stages draw from
    seqlen: int


class CachedFitness:
    """Scores of genomes (looked up by key among the live ones) on windows, each pair computed once."""

    def __init__(self, executor):
        self.executor = executor
        self.cache: dict[tuple, float] = {}
        self.live: dict[bytes, Genome] = {}
        self.evaluations = 0

    def __call__(self, keys: list[bytes], windows: list[int]) -> list[float]:
        w = tuple(windows)
        todo = [k for k in dict.fromkeys(keys) if (k, w) not in self.cache]
        if todo:
            for k, s in zip(todo, self.executor.score([self.live[k] for k in todo], list(windows))):
                self.cache[k, w] = s
            self.evaluations += len(todo)
        return [self.cache[k, w] for k in keys]

    def of(self, genomes: list[Genome], windows: list[int]) -> list[float]:
        self.live.update((g.key(), g) for g in genomes)
        return self([g.key() for g in genomes], windows)


def evolve_population(space: Space, init: Genome, shape: Shape, plan: Plan, executor, progress: bool = True) -> dict:
    """Evolve widths from `init` as `plan` says, scoring candidates through `executor`: the best
    genome, the per-generation history, the evaluation count and the initial and final fitness."""
    fit = CachedFitness(executor)
    fixed = list(range(plan.fixed_windows))
    stages = plan.stages or [(plan.fixed_windows * plan.seqlen, plan.top_k)]
    dense = shape.dense_params
    legal = lambda g: abs(g.params(shape) / dense - plan.keep) <= plan.band + 1e-12
    if not legal(init):
        raise PrunekitError(f"the uniform initialisation keeps {init.params(shape) / dense:.4f} of the block "
                            f"parameters, outside keep {plan.keep} ± band {plan.band}: widen --band"
                            + (" or lower --width-multiple" if space.multiple > 1 else ""))
    start = fit.of([init], fixed)[0]
    guard = BestSoFar(lambda keys: fit(keys, fixed), init.key())
    champion = {init.key(): init}        # the genome behind guard.best
    history = [{"generation": "init", "best": start, "mean": start, "evaluated": 1, "fixed": start}]
    first: dict[bytes, float] = {}       # first-stage scores of this generation's candidates

    def windows(stage: int, generation: int) -> list[int]:
        if plan.stages is None:
            return fixed
        return draw_windows(plan.pool_windows, stages[stage][0], plan.seqlen, plan.seed, generation, stage)

    def staged(keys, stage, generation):
        scores = fit(keys, windows(stage, generation))
        if stage == 0:
            first.update(zip(keys, scores))
        return scores

    def select(candidates: list[Genome], parents: list[Genome], generation: int):
        first.clear()
        before = fit.evaluations
        fit.live = {g.key(): g for g in candidates + parents}
        sel = staged_selection([g.key() for g in candidates], stages, staged, generation,
                               elites=[g.key() for g in parents])
        if guard.offer(sel.survivors[0]):
            champion[guard.best] = fit.live[guard.best]
        fr = [g.params(shape) / dense for g in candidates]
        row = {"generation": generation, "best": sel.scores[0],
               "mean": sum(first[g.key()] for g in candidates) / len(candidates),
               "evaluated": fit.evaluations - before, "kept_min": min(fr), "kept_max": max(fr),
               "fixed": guard.score}
        if plan.stages is not None:
            row["stages"] = sel.stages
        return [fit.live[k] for k in sel.survivors], row

    if plan.generations == 0:
        return _result(init, history, fit, start, start)
    gen = torch.Generator().manual_seed(plan.seed)
    seen = {init.key()}

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
    pop = [init] + spawn(lambda: space.mutate(init, 0.0, P_RATIO0, P_MASK0, gen), plan.population - 1)
    parents, row = select(pop, [], 0)
    history.append(row)
    bar = progress_bar(plan.generations, "search-llm", "generation", progress)
    for g in range(1, plan.generations + 1):
        def cross():
            a = pick(parents)
            mates = [p for p in parents if p.depth == a.depth and p is not a]
            return crossover(a, pick(mates), gen) if mates else None
        children = (spawn(lambda: space.mutate(pick(parents), P_DEPTH, P_RATIO, P_MASK, gen), plan.mutants)
                    + spawn(cross, plan.crossovers)
                    + spawn(lambda: space.mutate(pick(parents), P_DEPTH, P_RATIO0, P_MASK0, gen), plan.randoms))
        if not children:
            history.append({"generation": g, "best": history[-1]["best"], "mean": None, "evaluated": 0,
                            "fixed": guard.score})
            bar.update(1)
            continue
        parents, row = select(children, parents, g)
        history.append(row)
        bar.set_postfix(best=f"{row['best']:.4g}", mean=f"{row['mean']:.4g}")
        bar.update(1)
    bar.close()
    return _result(champion[guard.best], history, fit, start, guard.score)


def _result(best: Genome, history: list, fit: CachedFitness, start: float, final: float) -> dict:
    return {"best": best, "history": history, "evaluations": fit.evaluations, "initial_fitness": start,
            "final_fitness": final}
