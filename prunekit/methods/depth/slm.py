"""Sliding Layer Merging (Ding et al. 2025, "Sliding Layer Merging Method for Efficient Depth-Wise
Pruning in LLMs", arXiv 2502.19159; docs/methods.md): grow a window of consecutive blocks downward
from just below the protected last block while merging it keeps the final hidden states
cosine-similar to the dense model above a threshold; commit the last passing window, continue
below it. With a layer count instead of a threshold, the threshold is bisected.

Choice where the released code is silent or odd: a window still growing when it reaches block 0
is committed (the released loop drops it)."""
from __future__ import annotations

from dataclasses import dataclass


from ...models.block_shapes import blocks_alike
from ...solvers.similarity import MERGE_RULES
from ..options import option, require
from ..registry import register_method
from .base import DepthConfig, DepthMethod, DepthState, bisect_threshold
from .fidelity import FinalStateSimilarity
from ...progress import bar as progress_bar


@dataclass
class ThresholdConfig(DepthConfig):
    """Merging methods driven by a similarity threshold of the final hidden states."""
    threshold: float | None = option(
        None, "similarity threshold of the final hidden states; with --remove-layers/--ratio it is bisected "
              "until exactly that many blocks go", default_text="0.72 slm, 0.65 laco")

    def __post_init__(self):
        super().__post_init__()
        require(self.threshold is None or (self.remove_layers is None and self.ratio is None),
                "give a {threshold} or a layer count ({remove_layers}/{ratio}), not both")


@dataclass
class SLMConfig(ThresholdConfig):
    merge: str = option("rdsc", "merge rule: rdsc = base block + summed differences of the others (the paper); "
                                "top = the top block's projections with the base's norms (what the released code "
                                "computes)", choices=tuple(MERGE_RULES))

    def __post_init__(self):
        super().__post_init__()
        require(self.merge in MERGE_RULES, f"unknown {{merge}} rule '{self.merge}': choose from {', '.join(MERGE_RULES)}")


def slide(state: DepthState, threshold: float, similarity, cap: int | None = None) -> int:
    """The sliding-window loop on `state` (top-down, last block protected); returns blocks removed.
    `similarity(state, lo, hi)` scores merging current blocks lo..hi; `cap` stops at exactly
    that many removals by committing a window as soon as it reaches the count."""
    start = len(state)
    top = len(state) - 2
    low, best = top - 1, None          # best: similarity of the passing window [low+1..top], if any
    while low >= 0:
        removed = start - len(state)
        if cap is not None and removed >= cap:
            break
        s = similarity(state, low, top)
        if s > threshold:
            best = s
            if cap is not None and removed + (top - low) >= cap:
                state.merge(low, top, similarity=s, threshold=threshold)
                break
            low -= 1
        elif best is not None:         # commit [low+1..top]; continue with low as the new top
            state.merge(low + 1, top, similarity=best, threshold=threshold)
            top, low, best = low, low - 1, None
        else:                          # even two blocks fail: slide down
            top, low = top - 1, low - 1
    else:
        if best is not None:           # the window grew down to block 0: commit it
            state.merge(0, top, similarity=best, threshold=threshold)
    return start - len(state)


class _ThresholdMerging(DepthMethod):
    """Shared driver of the threshold methods: run the procedure at the given threshold, or bisect
    the threshold until exactly K blocks go (the final run capped at K)."""
    protects_last = True
    default_threshold = 0.0
    cap_trials = False        # whether bisection trials already stop at K
    needs_alike_blocks = True

    def check(self) -> None:
        super().check()
        self.adapter.require("its blocks have different widths (a width-pruned model), and merging adds blocks' "
                             "weights entry by entry", blocks_alike(self.adapter), self.name)

    def rule(self) -> str:
        raise NotImplementedError

    def procedure(self, state: DepthState, threshold: float, similarity, cap: int | None = None) -> int:
        raise NotImplementedError

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        state.rule = self.rule()
        sim = FinalStateSimilarity(stack)
        k = self.config.target(len(state))
        if k is None:
            t = self.default_threshold if self.config.threshold is None else self.config.threshold
            self.procedure(state, t, sim.of_merge)
        else:
            bar = progress_bar(17, f"{self.name} threshold bisection", "trial", progress)

            def trial(t):
                n = self.procedure(DepthState(self.adapter, self.rule()), t, sim.of_merge,
                                   cap=k if self.cap_trials else None)
                bar.set_postfix(threshold=f"{t:.4f}", removed=n)
                bar.update(1)
                return n
            t, trail = bisect_threshold(trial, k)
            bar.close()
            self.procedure(state, t, sim.of_merge, cap=k)
            self.details["bisection"] = [{"threshold": a, "removed": b} for a, b in trail]
        self.details.update(threshold=t, candidate_evaluations=sim.evaluations, windows=list(state.log))


@register_method("slm", SLMConfig)
class SLM(_ThresholdMerging):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SLMConfig(remove_layers=2)

    default_threshold = 0.72

    def rule(self):
        return self.config.merge

    def procedure(self, state, threshold, similarity, cap=None):
        return slide(state, threshold, similarity, cap)


def collapse(state: DepthState, threshold: float, similarity, size: int = 4, interval: int = 2,
             cap: int | None = None) -> int:
    """LaCo's layer collapse: from the top (last block protected) down, try merging `size`
    consecutive blocks; accept above the threshold and jump down by `interval`, else step down
    by one. `cap` shrinks the last window so that exactly that many blocks go."""
    start = len(state)
    low = len(state) - 1 - size
    while low >= 0:
        removed = start - len(state)
        if cap is not None and removed >= cap:
            break
        hi = min(low + size - 1, len(state) - 2)
        if cap is not None:
            hi = min(hi, low + cap - removed)
        if hi > low:
            s = similarity(state, low, hi)
            if s > threshold:
                state.merge(low, hi, similarity=s, threshold=threshold)
                low -= interval
                continue
        low -= 1
    return start - len(state)


@dataclass
class LaCoConfig(ThresholdConfig):
    merge_size: int = option(4, "blocks merged at once, C")
    interval: int = option(2, "blocks to jump down after a merge, I")

    def __post_init__(self):
        super().__post_init__()
        require(self.merge_size >= 2 and self.interval >= 1, "laco needs {merge_size} >= 2 and {interval} >= 1")


@register_method("laco", LaCoConfig)
class LaCo(_ThresholdMerging):
    """LaCo (Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse",
    arXiv 2402.11187): RDSC layer collapse, with the same protection and similarity as SLM."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return LaCoConfig(remove_layers=1, merge_size=2, interval=1)
    default_threshold = 0.65
    cap_trials = True

    def rule(self):
        return "rdsc"

    def procedure(self, state, threshold, similarity, cap=None):
        return collapse(state, threshold, similarity, self.config.merge_size, self.config.interval, cap)
