"""How close a candidate block list stays to the dense model: the cosine similarity of final
hidden states (after the final norm) on the calibration windows, each window's [L, d] tensor
flattened whole, averaged over windows (the SLM paper, arXiv 2502.19159). The reference is always the
original model. Candidate scores are memoised by (current groups, window), so the repeated
trials of a threshold bisection re-use them."""
from __future__ import annotations

from ...solvers.similarity import sample_cosine
from .base import DepthState
from ...engine.stack import BlockStack


class FinalStateSimilarity:
    def __init__(self, stack: BlockStack):
        self.stack = stack
        self.dense_inputs = stack.all_inputs(list(stack.adapter.layers))
        self.reference = stack.final_hidden(self.dense_inputs[-1])
        self.cache: dict = {}
        self.evaluations = 0

    def of_merge(self, state: DepthState, lo: int, hi: int) -> float:
        """Similarity if current blocks lo..hi were merged; blocks below lo must be original."""
        key = (tuple(tuple(g) for g in state.groups), lo, hi)
        if key not in self.cache:
            if not state.untouched_below(lo - 1):
                raise RuntimeError("merges must proceed top-down: blocks below the window were changed")
            blocks = state.with_merged(lo, hi)[lo:]
            out = self.stack.through(blocks, self.dense_inputs[lo])
            self.cache[key] = sample_cosine(self.stack.final_hidden(out), self.reference)
            self.evaluations += 1
        return self.cache[key]
