"""EvoPress's search machinery as pure functions (Sieberling et al. 2024, arXiv 2410.14649; the
project's docs/methods.md): level-switch mutation under an exact total, staged selection with
elitism, and the (1 + lambda) loop that ties them together. Nothing here knows about models: a
genome is a tuple of per-unit level indices, fitness is a batch function, lower is better, and
every random draw comes from a `random.Random` the caller seeds.

The fixed selection set: `fitness(candidates, stage, FIXED)` (generation FIXED = -1) must score
on one set of calibration data that is the same at every call (the driver uses the last stage's
budget on one fixed draw of windows). Per-generation minibatches are noisy, so the parent may be
replaced by an offspring that only looked better on them; the search therefore keeps the best
genome seen so far by its score on the fixed set and returns that one, never anything worse than
its start there.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import PrunekitError

Genome = tuple[int, ...]
# fitness(candidates, stage index, generation) -> one score per candidate, lower is better
BatchFitness = Callable[[list[Genome], int, int], list[float]]
FIXED = -1      # the generation index that asks a fitness for its fixed selection set


def parse_stages(spec: str | Sequence[tuple[int, int]], last: int | None = 1) -> list[tuple[int, int]]:
    """'2048:8,16384:2,65536:1' -> [(2048, 8), (16384, 2), (65536, 1)].

    Each stage scores the surviving candidates on TOKENS calibration tokens and keeps the best
    SURVIVORS; budgets may not shrink, survivors may not grow, and the last stage keeps `last`
    (one for a (1 + lambda) search; None: the caller checks it)."""
    if isinstance(spec, str):
        stages = []
        for part in (p.strip() for p in spec.split(",")):
            try:
                tokens, survivors = (int(x) for x in part.split(":"))
            except ValueError:
                raise PrunekitError(f"stage '{part}' is not TOKENS:SURVIVORS (e.g. 2048:8,16384:2,65536:1)") from None
            stages.append((tokens, survivors))
    else:
        stages = [(int(t), int(s)) for t, s in spec]
    if not stages:
        raise PrunekitError("--stages is empty: give TOKENS:SURVIVORS,... (e.g. 2048:8,16384:2,65536:1)")
    for t, s in stages:
        if t < 1 or s < 1:
            raise PrunekitError(f"stage {t}:{s}: tokens and survivors must be at least 1")
    for (t0, s0), (t1, s1) in zip(stages, stages[1:]):
        if t1 < t0 or s1 > s0:
            raise PrunekitError(f"stages {t0}:{s0} then {t1}:{s1}: token budgets may not shrink nor survivors grow")
    if last is not None and stages[-1][1] != last:
        raise PrunekitError(f"the last stage must keep {last} survivor{'s' * (last != 1)} (got {stages[-1][1]})")
    return stages


def switch_count(rng: random.Random, most: int = 3) -> int:
    """EvoPress's number of level switches per offspring: min(U{1..m}, U{1..m}), biased to few."""
    return min(rng.randint(1, most), rng.randint(1, most))


def level_switch(levels: Sequence[int], n_levels: int, switches: int, rng: random.Random) -> Genome:
    """`switches` times: one unit goes up one level and another unit down one level, so the sum
    of the levels (the compression total) is exactly unchanged. With two levels (0 kept,
    1 dropped) a switch swaps a dropped unit and a kept one."""
    out = list(levels)
    if any(not 0 <= v < n_levels for v in out):
        raise PrunekitError(f"levels {out} fall outside 0..{n_levels - 1}")
    for _ in range(switches):
        down = [j for j, v in enumerate(out) if v > 0]
        up = [i for i, v in enumerate(out) if v < n_levels - 1]
        # a move needs two distinct units, one able to rise and one able to fall
        donors = [j for j in down if any(i != j for i in up)]
        if not donors:
            raise PrunekitError(f"no level switch is possible from {out} with {n_levels} levels")
        j = rng.choice(donors)
        i = rng.choice([i for i in up if i != j])
        out[i] += 1
        out[j] -= 1
    return tuple(out)


def best_indices(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k lowest scores; ties go to the earlier candidate (deterministic)."""
    for s in scores:
        if math.isnan(s):
            raise PrunekitError("a candidate's fitness is NaN: the model produces non-finite outputs")
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:k]


@dataclass
class Selection:
    winner: Genome
    winner_score: float            # on the last stage's tokens
    stages: list[dict] = field(default_factory=list)
    evaluations: int = 0
    survivors: list = field(default_factory=list)    # the last stage's survivors, best first
    scores: list = field(default_factory=list)       # and their last-stage scores


def staged_selection(candidates: list[Genome], stages: list[tuple[int, int]], fitness: BatchFitness,
                     generation: int = 0, elite: Genome | None = None, elites: Sequence[Genome] = ()) -> Selection:
    """Score the candidates on growing token budgets, keeping each stage's stated number of
    survivors; the elite (the current parent), or the elites (the current parents of a search
    that keeps several), join the last stage, so they are replaced only by offspring that beat
    them there. Candidates are compared with ==, so they must be hashable values (tuples, keys)."""
    pool = list(candidates)
    joining = ([elite] if elite is not None else []) + list(elites)
    records, evaluations = [], 0
    for s, (tokens, survivors) in enumerate(stages):
        last = s == len(stages) - 1
        for e in joining if last else ():
            if e not in pool:
                pool.append(e)
        scores = fitness(pool, s, generation)
        if len(scores) != len(pool):
            raise RuntimeError(f"fitness returned {len(scores)} scores for {len(pool)} candidates")
        evaluations += len(pool)
        keep = best_indices(scores, survivors)
        records.append({"tokens": tokens, "evaluated": len(pool), "survivors": len(keep),
                        "best": scores[keep[0]]})
        pool, last_scores = [pool[i] for i in keep], [scores[i] for i in keep]
    return Selection(pool[0], last_scores[0], records, evaluations, pool, last_scores)


def offspring(parent: Genome, count: int, mutate: Callable[[Genome, random.Random], Genome],
              rng: random.Random, seen: set | None = None, tries_per_child: int = 50) -> list[Genome]:
    """Up to `count` distinct mutants, none equal to the parent or to anything in `seen`
    (duplicates are redrawn; a small space may yield fewer)."""
    taken = set(seen or ()) | {parent}
    out = []
    for _ in range(count * tries_per_child):
        if len(out) == count:
            break
        child = mutate(parent, rng)
        if child not in taken:
            taken.add(child)
            out.append(child)
    return out


@dataclass
class EvolutionResult:
    best: Genome                # the best genome seen, by its score on the fixed selection set
    score: float                # its score there
    history: list[dict]
    evaluations: int            # every candidate scored, the fixed-set scorings included
    start_score: float = float("nan")    # the start's score on the fixed selection set: score <= start_score
    fixed_evaluations: int = 0  # how many of the evaluations were on the fixed selection set


class BestSoFar:
    """The best genome by its score on the fixed selection set (lower is better): a genome
    replaces the incumbent only when strictly better there, so the start is kept unless beaten.
    Each genome is scored there at most once."""

    def __init__(self, judge: Callable[[list[Genome]], list[float]], start):
        self.judge, self.scores = judge, {}
        self.evaluations = 0
        self.best = start
        self.start_score = self.score = self.of(start)

    def of(self, genome) -> float:
        if genome not in self.scores:
            (s,) = self.judge([genome])
            if math.isnan(s):
                raise PrunekitError("a candidate's fitness is NaN: the model produces non-finite outputs")
            self.scores[genome] = s
            self.evaluations += 1
        return self.scores[genome]

    def offer(self, genome) -> bool:
        """Scores `genome` on the fixed set; True if it became the best."""
        s = self.of(genome)
        if s < self.score:
            self.best, self.score = genome, s
            return True
        return False


def evolve(initial: Genome, fitness: BatchFitness, mutate: Callable[[Genome, random.Random], Genome],
           stages: list[tuple[int, int]], generations: int, children: int, rng: random.Random,
           on_generation: Callable[[dict], None] | None = None) -> EvolutionResult:
    """EvoPress's (1 + lambda) search: each generation, `children` distinct mutants of the parent go
    through staged selection with the parent as elite; the winner becomes the next parent.

    The result is the best genome seen by its score on the fixed selection set
    (`fitness(..., len(stages) - 1, FIXED)`), not the last parent: the start is scored there once,
    and every new parent once (one extra evaluation at the last stage's budget per generation
    that replaces the parent). History rows keep the winner's score on its generation's
    minibatch ("best") and add the best fixed-set score so far ("fixed")."""
    parent = tuple(initial)
    last = len(stages) - 1
    guard = BestSoFar(lambda cands: fitness(cands, last, FIXED), parent)
    history, evaluations = [], 0
    score = float("nan")
    for g in range(generations):
        kids = offspring(parent, children, mutate, rng)
        if not kids:
            history.append({"generation": g, "best": score, "changed": False, "evaluated": 0, "stages": [],
                            "fixed": guard.score})
            continue
        sel = staged_selection(kids, stages, fitness, g, elite=parent)
        evaluations += sel.evaluations
        if sel.winner != parent:
            guard.offer(sel.winner)
        row = {"generation": g, "best": sel.winner_score, "changed": sel.winner != parent,
               "evaluated": sel.evaluations, "stages": sel.stages, "fixed": guard.score}
        parent, score = sel.winner, sel.winner_score
        history.append(row)
        if on_generation:
            on_generation(row)
    return EvolutionResult(guard.best, guard.score, history, evaluations + guard.evaluations, guard.start_score,
                           guard.evaluations)


def draw_windows(total: int, tokens: int, seqlen: int, seed: int, generation: int, stage: int) -> list[int]:
    """The calibration windows a selection stage scores on: enough whole windows for `tokens`
    (all of them if there are fewer), a fresh draw for every (generation, stage), fixed by the
    seed (a string seed hashes the same in every process)."""
    n = min(total, max(1, math.ceil(tokens / seqlen)))
    rng = random.Random(f"{seed}:{generation}:{stage}")
    return sorted(rng.sample(range(total), n))
