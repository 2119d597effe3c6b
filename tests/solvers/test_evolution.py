"""The evolutionary search (EvoPress): level switches, stages, selection and the search itself on
separable and noisy fitnesses, the fixed windows."""
from __future__ import annotations

import random

import pytest

from prunekit.errors import PrunekitError
from prunekit.solvers.evolution import (FIXED, draw_windows, evolve, level_switch, parse_stages, staged_selection,
                                        switch_count)


@pytest.mark.parametrize("n_levels", [2, 5])
def test_level_switch_keeps_total_exactly(n_levels):
    rng = random.Random(1)
    for _ in range(2000):
        units = rng.randint(2, 12)
        genome = [rng.randrange(n_levels) for _ in range(units)]
        if len(set(genome)) == 1 and genome[0] in (0, n_levels - 1):
            genome[0] = 1 if genome[0] == 0 else n_levels - 2   # make a switch possible
        switches = switch_count(rng, 3) if rng.random() < 0.5 else rng.randint(1, 8)
        child = level_switch(genome, n_levels, switches, rng)
        assert sum(child) == sum(genome)
        assert all(0 <= v < n_levels for v in child)
        if switches == 1:   # one switch moves exactly two units by one level each
            assert sorted(abs(a - b) for a, b in zip(child, genome) if a != b) == [1, 1]


def test_level_switch_is_seeded_and_refuses_impossible_moves():
    draws = lambda seed: [level_switch((0, 1, 1, 0, 2, 1), 3, 2, r) for r in [random.Random(seed)] for _ in range(20)]
    assert draws(7) == draws(7) and draws(7) != draws(8)
    with pytest.raises(PrunekitError):
        level_switch((0, 0, 0), 2, 1, random.Random(0))       # nothing to drop back
    with pytest.raises(PrunekitError):
        level_switch((2,), 3, 1, random.Random(0))               # a single unit cannot switch


def test_switch_count_distribution_is_min_of_two_uniforms():
    rng = random.Random(0)
    counts = [switch_count(rng, 3) for _ in range(30000)]
    # P(min = 1) = 1 - (2/3)^2 = 5/9, P(min = 3) = 1/9
    assert abs(counts.count(1) / len(counts) - 5 / 9) < 0.01
    assert abs(counts.count(3) / len(counts) - 1 / 9) < 0.01


def test_parse_stages_accepts_and_rejects():
    assert parse_stages("2048:8,16384:2,65536:1") == [(2048, 8), (16384, 2), (65536, 1)]
    for bad in ("2048", "2048:8,1024:2,65536:1", "2048:2,4096:4,8192:1", "2048:8,4096:2", "0:1", "a:b", ""):
        with pytest.raises(PrunekitError):
            parse_stages(bad)


def test_staged_selection_keeps_stated_survivors_and_elite():
    stages = parse_stages("64:7,128:3,256:1")
    pools = []
    noise = random.Random(3)
    table = {}

    def fitness(cands, stage, generation):
        pools.append((stage, list(cands)))
        scores = [sum(c) + noise.random() for c in cands]
        table[stage] = dict(zip(cands, scores))
        return scores

    cands = [tuple(random.Random(i).sample(range(20), 4)) for i in range(12)]
    elite = (100, 100, 100, 100)
    sel = staged_selection(cands, stages, fitness, elite=elite)
    assert [len(p) for _, p in pools] == [12, 7, 3 + 1]        # elite joins only the last stage
    assert elite in pools[2][1] and elite not in pools[0][1] + pools[1][1]
    for s in (0, 1):        # survivors are exactly the best of each stage's own scores
        best = sorted(table[s], key=lambda c: table[s][c])[:stages[s][1]]
        assert set(pools[s + 1][1]) - {elite} == set(best)
    assert sel.winner == min(table[2], key=lambda c: table[2][c])
    assert [r["survivors"] for r in sel.stages] == [7, 3, 1] and sel.evaluations == 12 + 7 + 4


def test_evolve_finds_best_drop_set_for_separable_fitness():
    cost = [0.9, 0.1, 0.7, 0.3, 0.05, 0.8, 0.6, 0.2]
    best = tuple(int(i in {1, 4, 7}) for i in range(8))          # the three cheapest blocks

    def fitness(cands, stage, generation):
        return [sum(c * w for c, w in zip(g, cost)) for g in cands]

    mutate = lambda g, r: level_switch(g, 2, switch_count(r), r)
    res = evolve((1, 0, 1, 0, 0, 1, 0, 0), fitness, mutate, parse_stages("1:4,2:1"), 30, 6, random.Random(0))
    assert res.best == best
    again = evolve((1, 0, 1, 0, 0, 1, 0, 0), fitness, mutate, parse_stages("1:4,2:1"), 30, 6, random.Random(0))
    assert again.history == res.history


COST = [0.9, 0.1, 0.7, 0.3, 0.05, 0.8, 0.6, 0.2]


CHEAPEST = tuple(int(i in {1, 4, 7}) for i in range(8))         # the three cheapest blocks dropped


def true_cost(g):
    return sum(c * w for c, w in zip(g, COST))


def switch_mutate(g, r):
    return level_switch(g, 2, switch_count(r), r)


def test_evolve_never_returns_worse_than_its_start_on_the_fixed_set():
    """Minibatches that rank every genome upside down: offspring win every generation there, so
    the parent drifts to ever worse genomes, but on the fixed set the start is the best of all and
    must be what comes back, with its own figure as both start and best."""
    judged = []

    def fitness(cands, stage, generation):
        if generation == FIXED:
            assert stage == 1                               # the last stage's budget
            judged.extend(cands)
            return [true_cost(g) for g in cands]
        return [-true_cost(g) for g in cands]

    res = evolve(CHEAPEST, fitness, switch_mutate, parse_stages("1:4,2:1"), 10, 6, random.Random(0))
    changes = sum(r["changed"] for r in res.history)
    assert changes >= 3                                                 # the parent was replaced again and again
    assert judged[0] == CHEAPEST and len(judged) == len(set(judged)) == 1 + changes
    assert all(true_cost(g) > true_cost(CHEAPEST) for g in judged[1:])   # ... by genomes worse on the fixed set
    assert res.best == CHEAPEST
    assert res.score == res.start_score == pytest.approx(true_cost(CHEAPEST))
    assert [r["fixed"] for r in res.history] == [res.start_score] * 10
    assert res.fixed_evaluations == len(judged)
    assert res.evaluations == sum(r["evaluated"] for r in res.history) + len(judged)
    none = evolve(CHEAPEST, fitness, switch_mutate, parse_stages("1:4,2:1"), 0, 6, random.Random(0))
    assert (none.best, none.score, none.fixed_evaluations) == (CHEAPEST, res.start_score, 1)


def test_evolve_keeps_the_best_so_far_under_noisy_minibatches():
    """Minibatch scores are the true cost plus noise larger than the differences, fresh per
    (genome, generation, stage): the result is the genome of lowest fixed-set score among the
    start and every parent the search took, and the run is reproducible."""
    start = (1, 0, 1, 0, 0, 1, 0, 0)

    def run():
        judged = {}

        def fitness(cands, stage, generation):
            if generation == FIXED:
                judged.update((g, true_cost(g)) for g in cands)
                return [true_cost(g) for g in cands]
            return [true_cost(g) + 3 * random.Random(f"{g}:{generation}:{stage}").random() for g in cands]

        return evolve(start, fitness, switch_mutate, parse_stages("1:3,2:1"), 25, 5, random.Random(1)), judged

    res, judged = run()
    assert start in judged and len(judged) > 3
    best = min(judged, key=judged.get)
    assert res.best == best and res.score == judged[best] <= res.start_score == true_cost(start)
    assert res.score < res.start_score                                  # here the search did find better
    fixed = [r["fixed"] for r in res.history]
    assert all(a >= b for a, b in zip(fixed, fixed[1:])) and fixed[-1] == res.score
    again, _ = run()
    assert (again.best, again.score, again.history) == (res.best, res.score, res.history)


def test_draw_windows_deterministic_and_sized():
    w = draw_windows(20, 100, 32, seed=0, generation=3, stage=1)
    assert len(w) == 4 and w == sorted(set(w)) and w == draw_windows(20, 100, 32, 0, 3, 1)
    assert draw_windows(5, 10**6, 32, 0, 0, 0) == list(range(5))
