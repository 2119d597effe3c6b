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

A second budget, on latency, is optional: each level then also has a latency (measured, so not
necessarily ascending; "none" costs 0) and a candidate *fits* when its parameters are within B
and its summed latency within the latency budget. Maximal means the same with both: it fits, and
no single up step still fits. Down steps always lead to a fitting genome (all-"none" fits both).
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
    attention_latency: tuple[float, ...] = ()     # latency of each attention level, [0] = 0
    mlp_latency: tuple[float, ...] = ()           # latency of each MLP level, [0] = 0
    max_latency: float | None = None              # summed block latency at most (None: no latency budget)

    def __post_init__(self):
        for name, costs in (("attention", self.attention), ("mlp", self.mlp)):
            if list(costs) != sorted(set(costs)):
                raise PrunekitError(f"{name} level costs must be strictly ascending: {costs}")
        if self.budget < 0 or self.budget > self.full:
            raise PrunekitError(f"budget {self.budget} outside [0, {self.full}]")
        if self.max_latency is not None:
            for name, lat, costs in (("attention", self.attention_latency, self.attention),
                                     ("mlp", self.mlp_latency, self.mlp)):
                if len(lat) != len(costs) or lat[0] != 0 or min(lat) < 0:
                    raise PrunekitError(f"{name} latencies must be one per level, 0 for none, never negative: {lat}")
            if self.max_latency < 0:
                raise PrunekitError(f"latency budget {self.max_latency} is negative")

    @property
    def full(self) -> int:
        return self.blocks * (self.attention[-1] + self.mlp[-1])

    def cost(self, genome: Genome) -> int:
        return sum(self.attention[a] + self.mlp[m] for a, m in genome)

    def latency(self, genome: Genome) -> float:
        return sum(self.attention_latency[a] + self.mlp_latency[m] for a, m in genome)

    def fits(self, genome: Genome) -> bool:
        """Within the parameter budget, and the latency budget when there is one."""
        return self.cost(genome) <= self.budget and (self.max_latency is None
                                                     or self.latency(genome) <= self.max_latency)

    def ups(self, genome: Genome) -> list[Genome]:
        """Every genome one level up in one sublayer that still fits."""
        return [g for b, p in self.units() if (g := self.step(genome, b, p, +1)) is not None and self.fits(g)]

    def maximal(self, genome: Genome) -> bool:
        return self.fits(genome) and not self.ups(genome)

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
        """Down steps at random until the genome fits, then up steps at random while one fits: the
        result is maximal."""
        units = self.units()
        while not self.fits(genome):
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
        """Every genome with one (attention, MLP) level for all blocks that fits, the costliest first."""
        out = [tuple([(a, m)] * self.blocks) for a in range(len(self.attention)) for m in range(len(self.mlp))]
        out = [g for g in out if self.fits(g)]
        return sorted(out, key=self.cost, reverse=True)

    def every(self):
        """Every maximal genome (exhaustive; small spaces only)."""
        pairs = list(itertools.product(range(len(self.attention)), range(len(self.mlp))))
        for genome in itertools.product(pairs, repeat=self.blocks):
            if self.maximal(genome):
                yield genome
