"""Options every evolutionary search shares (EvoPress, arXiv 2410.14649). Each field carries
its CLI help in `metadata["help"]`."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import PrunekitError
from ...search.executors import EXECUTORS
from ...search.fitness import FITNESS_KINDS
from ...solvers.evolution import parse_stages


@dataclass
class EvoSearchOptions:
    fitness: str = field(default="kl", metadata={
        "help": "candidate fitness on calibration tokens: kl (mean KL from the dense model's next-token "
                "distribution) or ppl (calibration perplexity)"})
    stages: str | None = field(default=None, metadata={
        "help": "staged selection TOKENS:SURVIVORS,... (the last keeps 1); default per method"})
    generations: int | None = field(default=None, metadata={
        "help": "search generations; default per method"})
    offspring: int | None = field(default=None, metadata={
        "help": "offspring per generation (lambda of the (1+lambda) search); default per method"})
    max_switches: int = field(default=3, metadata={
        "help": "level switches per offspring are min(U(1,m), U(1,m)) with this m"})
    kl_topk: int = field(default=512, metadata={
        "help": "keep only the top-k dense log-probabilities plus the tail mass per token (0: the full "
                "distribution; a k at least the vocabulary is exact)"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw of the search"})
    executor: str = field(default="local", metadata={
        "help": "where fitness runs: local (this process, or --workers processes) or ray "
                "(pip install prunekit[ray]; joins RAY_ADDRESS or starts a local cluster)"})
    workers: int = field(default=1, metadata={"help": "fitness workers (processes or Ray actors)"})
    threads_per_worker: int = field(default=1, metadata={"help": "torch threads in each worker"})

    def check_search(self) -> None:
        if self.fitness not in FITNESS_KINDS:
            raise PrunekitError(f"--fitness {self.fitness}: choose {' or '.join(FITNESS_KINDS)}")
        if self.executor not in EXECUTORS:
            raise PrunekitError(f"--executor {self.executor}: choose {' or '.join(EXECUTORS)}")
        if self.stages is not None:
            parse_stages(self.stages)
        for name in ("generations", "offspring"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise PrunekitError(f"--{name} must be at least 0")
        for name in ("max_switches", "workers", "threads_per_worker"):
            if getattr(self, name) < 1:
                raise PrunekitError(f"--{name.replace('_', '-')} must be at least 1")
        if self.kl_topk < 0:
            raise PrunekitError("--kl-topk must be at least 0")
