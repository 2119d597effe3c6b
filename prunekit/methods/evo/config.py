"""Options every evolutionary search shares (EvoPress, Sieberling et al. 2024, arXiv 2410.14649)."""
from __future__ import annotations

from dataclasses import dataclass

from ...scoring.fitness import FITNESS_KINDS
from ...solvers.evolution import parse_stages
from ..options import FitnessOptions, option, require


@dataclass
class EvoSearchOptions(FitnessOptions):
    """Evolutionary search (EvoPress): level-switch mutation, staged selection, KL fitness."""
    fitness: str = option("kl", "candidate fitness on calibration tokens: kl (mean KL from the dense model's "
                                "next-token distribution) or ppl (calibration perplexity)", choices=tuple(FITNESS_KINDS))
    stages: str | None = option(None, "staged selection TOKENS:SURVIVORS,... (the last keeps 1)",
                                default_text="per method: evo-depth 2048:2,32768:1; evo-sparsity 2048:8,16384:2,65536:1")
    generations: int | None = option(None, "search generations",
                                     default_text="per method: evo-depth ceil(k(n-k)/1.5), evo-sparsity 400")
    offspring: int | None = option(None, "offspring per generation (lambda of the (1+lambda) search)",
                                   default_text="per method: evo-depth 32, evo-sparsity 64")
    max_switches: int = option(3, "level switches per offspring are min(U(1,m), U(1,m)) with this m")
    seed: int = option(0, "seed of every random draw of the search", flag="--search-seed")

    def check_search(self) -> None:
        self.check_fitness(self.fitness)
        if self.stages is not None:
            parse_stages(self.stages)
        for name in ("generations", "offspring"):
            v = getattr(self, name)
            require(v is None or v >= 0, f"{{{name}}} must be at least 0")
        require(self.max_switches >= 1, "{max_switches} must be at least 1")
