"""Fitness of width candidates, through the evolutionary methods' shared machinery (scoring/): a genome's
masked weights are written into the model's own blocks, its leading blocks run from the cached
block-0 inputs (BlockStack), and the last block's output is scored by WindowFitness (KL to the
dense model's next-token distribution, computed once, or perplexity). A picklable factory
builds the same evaluator in a worker process or Ray actor (scoring/executors.py)."""
from __future__ import annotations

import torch

from ...models.adapter import ModelAdapter
from ...scoring.fitness import WindowFitness
from ...engine.stack import BlockStack
from .genome import Genome, Shape
from .slicing import DenseWeights, KVFit


class WidthEvaluator:
    def __init__(self, stack: BlockStack, shape: Shape, kind: str, topk: int = 0, dense: DenseWeights | None = None):
        self.stack, self.shape = stack, shape
        self.dense = dense or DenseWeights(stack.adapter)
        dense_out = stack.through(self.dense.layers, stack.start.hidden)    # the model is still dense here
        self.fitness = WindowFitness(stack, kind, dense_out, topk)

    @torch.no_grad()
    def score(self, candidates: list[Genome], windows: list[int]) -> list[float]:
        out = []
        for genome in candidates:
            self.dense.apply(genome, self.shape)
            hidden = self.stack.through(self.dense.layers[:genome.depth], self.stack.start.hidden[windows])
            out.append(self.fitness.score(hidden, windows))
        return out


    @torch.no_grad()
    def score_current(self, depth: int, windows: list[int]) -> float:
        """Fitness of the weights now in the first `depth` blocks (a reformed model, not a genome)."""
        hidden = self.stack.through(self.dense.layers[:depth], self.stack.start.hidden[windows])
        return self.fitness.score(hidden, windows)


def width_evaluator(model, ids: torch.Tensor, shape: Shape, kind: str, topk: int = 0, device: str = "cpu",
                    dense: DenseWeights | None = None, kv_fit: KVFit | None = None) -> WidthEvaluator:
    """The one way an evaluator is built, here or in a worker, so every executor scores alike."""
    model.config.use_cache = False
    adapter = ModelAdapter(model)
    return WidthEvaluator(BlockStack(adapter, ids, device), shape, kind, topk, dense or DenseWeights(adapter, kv_fit))


class WidthFactory:
    """Builds a width evaluator in a worker from the dense model and the fitness windows (picklable;
    the model must still be dense when a worker unpickles it)."""

    def __init__(self, model, ids: torch.Tensor, shape: Shape, kind: str, topk: int, device: str = "cpu",
                 kv_fit: KVFit | None = None):
        self.model, self.ids, self.shape, self.kind, self.topk, self.device = model, ids, shape, kind, topk, device
        self.kv_fit = kv_fit

    def __call__(self) -> WidthEvaluator:
        return width_evaluator(self.model, self.ids, self.shape, self.kind, self.topk, self.device, kv_fit=self.kv_fit)
