"""Per-block shape search math (evo-shape; Puzzle, Bercovich et al. 2024, arXiv 2411.19146, chooses
one variant per block under a budget): the parameter accounting, the budget band every candidate
lies in, a mutation that keeps candidates there, and the uniform starts. Nothing here knows about
models: a genome is a tuple of (attention level, MLP level) per block, levels index cost lists
sorted ascending (level 0 is "none", the last is the dense sublayer), and every random draw comes
from a `random.Random` the caller seeds.

The budget. Levels are discrete, so a sum of block costs rarely hits the budget B exactly. Every
candidate is *maximal*: its cost is at most B and no single sublayer can move up one level
without exceeding B. So the search never exceeds the budget, and never leaves a step on the table
that would still fit (what is left is less than the cheapest step the candidate could take).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..errors import PrunekitError

Genome = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ShapeSpace:
    attention: tuple[int, ...]      # parameters of each attention level, ascending, [0] = none
    mlp: tuple[int, ...]            # parameters of each MLP level, ascending, [0] = none
    blocks: int
    budget: int                     # kept block parameters at most

    def __post_init__(self):
        for name, costs in (("attention", self.attention), ("mlp", self.mlp)):
            if list(costs) != sorted(set(costs)):
                raise PrunekitError(f"{name} level costs must be strictly ascending: {costs}")
        if self.budget < 0 or self.budget > self.full:
            raise PrunekitError(f"budget {self.budget} outside [0, {self.full}]")

    @property
    def full(self) -> int:
        return self.blocks * (self.attention[-1] + self.mlp[-1])

    def cost(self, genome: Genome) -> int:
        return sum(self.attention[a] + self.mlp[m] for a, m in genome)

    def ups(self, genome: Genome) -> list[Genome]:
        """Every genome one level up in one sublayer that still fits the budget."""
        return [g for b, p in self.units() if (g := self.step(genome, b, p, +1)) is not None
                and self.cost(g) <= self.budget]

    def maximal(self, genome: Genome) -> bool:
        return self.cost(genome) <= self.budget and not self.ups(genome)

    def units(self):
        """(block, part) for every sublayer; part 0 attention, 1 MLP."""
        return [(b, p) for b in range(self.blocks) for p in (0, 1)]

    def levels(self, part: int) -> int:
        return len(self.attention) if part == 0 else len(self.mlp)

    def step(self, genome: Genome, b: int, part: int, delta: int) -> Genome | None:
        """The genome with one sublayer moved `delta` levels, None past the ends."""
        level = genome[b][part] + delta
        if not 0 <= level < self.levels(part):
            return None
        pair = list(genome[b])
        pair[part] = level
        return genome[:b] + (tuple(pair),) + genome[b + 1:]

    def fill(self, genome: Genome, rng: random.Random) -> Genome:
        """Down steps at random until the cost fits, then up steps at random while one fits: the
        result is maximal."""
        units = self.units()
        while self.cost(genome) > self.budget:
            down = [g for b, p in units if (g := self.step(genome, b, p, -1)) is not None]
            genome = rng.choice(down)
        while up := self.ups(genome):
            genome = rng.choice(up)
        return genome

    def mutate(self, genome: Genome, rng: random.Random, moves: int) -> Genome:
        """`moves` random single-level steps (up or down, any sublayer), then `fill` to a maximal genome."""
        units = self.units()
        for _ in range(moves):
            b, p = rng.choice(units)
            moved = self.step(genome, b, p, rng.choice((-1, 1)))
            genome = moved if moved is not None else genome
        return self.fill(genome, rng)

    def uniform(self) -> list[Genome]:
        """Every genome with one (attention, MLP) level for all blocks that fits the budget,
        the costliest first."""
        out = [tuple([(a, m)] * self.blocks) for a in range(len(self.attention)) for m in range(len(self.mlp))]
        out = [g for g in out if self.cost(g) <= self.budget]
        return sorted(out, key=self.cost, reverse=True)

    def every(self):
        """Every maximal genome (exhaustive; small spaces only)."""
        pairs = list(itertools.product(range(len(self.attention)), range(len(self.mlp))))
        for genome in itertools.product(pairs, repeat=self.blocks):
            if self.maximal(genome):
                yield genome
