"""Runs the (1 + lambda) level-switch search of solvers/evolution.py with fitness computed by an
executor on calibration windows drawn per (generation, stage); returns the history for the
report. Shared by evo-depth and evo-sparsity. The fixed selection set (generation FIXED) is one
draw of the last stage's budget that never changes: the search returns the best genome on it,
and the start's and the best's scores on it are the two figures the summary reports."""
from __future__ import annotations

import random
import time
from pathlib import Path


from ...solvers.evolution import FIXED, draw_windows, evolve, level_switch, parse_stages, switch_count
from ...progress import bar as progress_bar


def run_search(options, initial: tuple, n_levels: int, executor, n_windows: int, seqlen: int,
               default_stages: str, generations: int, children: int, progress: bool = True,
               desc: str = "evo search", mutate=None) -> dict:
    """`mutate(genome, rng)` (default: EvoPress's level switch over `n_levels` levels)."""
    stages = parse_stages(options.stages or default_stages)
    rng = random.Random(options.seed)

    def fitness(cands, stage, generation):
        return executor.score(cands, draw_windows(n_windows, stages[stage][0], seqlen, options.seed, generation, stage))

    def level_switches(genome, r):
        return level_switch(genome, n_levels, switch_count(r, options.max_switches), r)
    mutate = mutate or level_switches

    bar = progress_bar(generations, desc, "generation", progress)

    def on_generation(row):
        bar.set_postfix(best=f"{row['best']:.5f}", fixed=f"{row['fixed']:.5f}", changed=row["changed"])
        bar.update(1)

    t0 = time.perf_counter()
    result = evolve(tuple(initial), fitness, mutate, stages, generations, children, rng, on_generation)
    seconds = time.perf_counter() - t0
    bar.close()
    # the start and the result on the fixed draw of the last stage's budget (generation FIXED)
    fixed = draw_windows(n_windows, stages[-1][0], seqlen, options.seed, FIXED, len(stages) - 1)
    return {"best": result.best, "history": result.history, "evaluations": result.evaluations,
            "fixed_evaluations": result.fixed_evaluations,
            "search_s": seconds, "executor": executor.name, "stages": stages, "generations": generations,
            "offspring": children, "initial_fitness": result.start_score, "final_fitness": result.score,
            "fitness_windows": len(fixed), "fitness_tokens": len(fixed) * seqlen, "fitness": options.fitness}


def evolution_figure(report: dict, folder: Path, start: str) -> list[str]:
    """The search history of an evo method's report as evolution.png."""
    from ...scoring.plots import plot_evolution
    meth = report["method"]
    if not meth.get("history"):
        return []
    plot_evolution(meth["history"], Path(folder) / "evolution.png",
                   f"{meth['name']}, {report['model']['source']}", meth["fitness"],
                   meth.get("initial_fitness"), meth.get("final_fitness"))
    return ["evolution.png"]
