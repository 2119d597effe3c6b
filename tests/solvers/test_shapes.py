"""Shape-search math: accounting, maximal genomes (within the budget, no step left that fits),
mutation and fill keep to them, uniform starts."""
import random

import pytest

from prunekit.errors import PrunekitError
from prunekit.solvers.shapes import ShapeSpace

SPACE = ShapeSpace(attention=(0, 40, 100), mlp=(0, 30, 60, 90), blocks=4, budget=int(0.7 * 4 * 190))


def test_cost_and_maximality_by_hand():
    g = ((2, 3), (0, 1), (1, 2), (2, 0))
    assert SPACE.cost(g) == 190 + 30 + 100 + 100
    assert SPACE.full == 760 and SPACE.budget == 532
    assert SPACE.maximal(((0, 3), (1, 3), (0, 3), (2, 3)))       # 500: +40 or +60 would pass 532
    assert not SPACE.maximal(((0, 2), (1, 3), (0, 3), (2, 3)))   # 470: one MLP step (+30) still fits
    assert not SPACE.maximal(((2, 3), (2, 3), (2, 3), (0, 0)))   # 570: over the budget


def test_mutation_and_fill_always_give_maximal_genomes():
    rng = random.Random(0)
    g = SPACE.fill(tuple([(2, 3)] * 4), rng)
    assert SPACE.maximal(g)
    for _ in range(500):
        g = SPACE.mutate(g, rng, rng.randint(1, 3))
        assert SPACE.maximal(g), (g, SPACE.cost(g))


def test_every_maximal_genome_by_brute_force():
    import itertools
    pairs = list(itertools.product(range(3), range(4)))
    brute = [g for g in itertools.product(pairs, repeat=4) if SPACE.cost(g) <= 532
             and all(SPACE.cost(SPACE.step(g, b, p, 1)) > 532 for b, p in SPACE.units()
                     if SPACE.step(g, b, p, 1) is not None)]
    assert sorted(SPACE.every()) == sorted(brute) and brute
    rng = random.Random(1)
    assert all(SPACE.fill(g, rng) == g for g in brute[:50])       # fill leaves a maximal genome alone


def test_uniform_starts_fit_and_come_costliest_first():
    starts = SPACE.uniform()
    costs = [SPACE.cost(g) for g in starts]
    assert costs == sorted(costs, reverse=True) and costs[0] <= SPACE.budget
    assert all(len(set(g)) == 1 for g in starts)
    assert len(starts) == sum(1 for a in (0, 40, 100) for m in (0, 30, 60, 90) if 4 * (a + m) <= 532)


def test_bad_spaces_are_refused():
    with pytest.raises(PrunekitError, match="ascending"):
        ShapeSpace((0, 50, 50), (0, 1), 2, 10)
    with pytest.raises(PrunekitError, match="budget"):
        ShapeSpace((0, 5), (0, 1), 2, 100)


# latencies per level, not ascending (a measured table can be noisy): none is 0
TIMED = ShapeSpace(attention=(0, 40, 100), mlp=(0, 30, 60, 90), blocks=4, budget=int(0.8 * 760),
                   attention_latency=(0.0, 5.0, 4.0), mlp_latency=(0.0, 3.0, 2.5, 6.0), max_latency=24.0)


def test_a_latency_budget_by_brute_force():
    import itertools
    pairs = list(itertools.product(range(3), range(4)))

    def fits(g):
        lat = sum(TIMED.attention_latency[a] + TIMED.mlp_latency[m] for a, m in g)
        return sum(TIMED.attention[a] + TIMED.mlp[m] for a, m in g) <= 608 and lat <= 24.0
    brute = [g for g in itertools.product(pairs, repeat=4) if fits(g)
             and not any(fits(u) for b, p in TIMED.units() if (u := TIMED.step(g, b, p, 1)) is not None)]
    assert sorted(TIMED.every()) == sorted(brute) and brute
    # the latency budget binds: some parameter-maximal genomes are over it
    free = ShapeSpace(TIMED.attention, TIMED.mlp, 4, 608)
    assert any(TIMED.latency(g) > 24.0 for g in free.every())
    rng = random.Random(0)
    g = TIMED.fill(tuple([(2, 3)] * 4), rng)
    for _ in range(500):
        assert TIMED.maximal(g) and TIMED.latency(g) <= 24.0 and TIMED.cost(g) <= 608
        g = TIMED.mutate(g, rng, rng.randint(1, 3))
    assert all(TIMED.fits(u) for u in TIMED.uniform())


def test_bad_latency_tables_are_refused():
    with pytest.raises(PrunekitError, match="latencies"):
        ShapeSpace((0, 5), (0, 1), 2, 10, attention_latency=(1.0, 2.0), mlp_latency=(0.0, 1.0), max_latency=3.0)
    with pytest.raises(PrunekitError, match="latencies"):
        ShapeSpace((0, 5), (0, 1), 2, 10, attention_latency=(0.0,), mlp_latency=(0.0, 1.0), max_latency=3.0)
