"""Sliding Layer Merging (algorithms.md 7.2-7.3): grow a window of consecutive blocks downward
from just below the protected last block while merging it keeps the final hidden states
cosine-similar to the dense model above a threshold; commit the last passing window, continue
below it. With a layer count instead of a threshold, the threshold is bisected.

Choice where the released code is silent or odd: a window still growing when it reaches block 0
is committed (the released loop drops it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tqdm.auto import tqdm

from ...errors import PrunekitError
from ...solvers.similarity import MERGE_RULES
from .base import DepthConfig, DepthMethod, DepthState, bisect_threshold
from .fidelity import FinalStateSimilarity


@dataclass
class SLMConfig(DepthConfig):
    threshold: float | None = None   # default 0.72 (the released code's) when no layer count is given
    merge: str = "rdsc"              # rdsc: base + summed differences (paper); top: the top layer (released code)
    method: ClassVar[str] = "slm"

    def __post_init__(self):
        super().__post_init__()
        if self.merge not in MERGE_RULES:
            raise PrunekitError(f"unknown merge rule '{self.merge}': choose from {', '.join(MERGE_RULES)}")
        if self.threshold is not None and (self.remove_layers is not None or self.ratio is not None):
            raise PrunekitError("give a threshold or a layer count (--remove-layers/--ratio), not both")


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

    def rule(self) -> str:
        raise NotImplementedError

    def procedure(self, state: DepthState, threshold: float, similarity, cap: int | None = None) -> int:
        raise NotImplementedError

    def run(self, stack, state: DepthState, progress: bool = True) -> None:
        state.rule = self.rule()
        sim = FinalStateSimilarity(stack)
        k = self.config.target(len(state))
        if k is None:
            t = self.default_threshold if self.config.threshold is None else self.config.threshold
            self.procedure(state, t, sim.of_merge)
        else:
            bar = tqdm(total=17, desc=f"{self.name()} threshold bisection", unit="trial",
                       disable=None if progress else True)

            def trial(t):
                n = self.procedure(DepthState(self.adapter, self.rule()), t, sim.of_merge,
                                   cap=k if self.cap_trials else None)
                bar.update(1)
                bar.set_postfix(threshold=f"{t:.4f}", removed=n)
                return n
            t, trail = bisect_threshold(trial, k)
            bar.close()
            self.procedure(state, t, sim.of_merge, cap=k)
            self.details["bisection"] = [{"threshold": a, "removed": b} for a, b in trail]
        self.details.update(threshold=t, candidate_evaluations=sim.evaluations, windows=list(state.log))


class SLM(_ThresholdMerging):
    default_threshold = 0.72

    def name(self):
        return "slm"

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
class LaCoConfig(DepthConfig):
    threshold: float | None = None   # default 0.65 when no layer count is given
    merge_size: int = 4              # C: blocks merged at once
    interval: int = 2                # I: how far to jump down after a merge
    method: ClassVar[str] = "laco"

    def __post_init__(self):
        super().__post_init__()
        if self.merge_size < 2 or self.interval < 1:
            raise PrunekitError("laco needs --merge-size >= 2 and --interval >= 1")
        if self.threshold is not None and (self.remove_layers is not None or self.ratio is not None):
            raise PrunekitError("give a threshold or a layer count (--remove-layers/--ratio), not both")


class LaCo(_ThresholdMerging):
    """LaCo (RDSC layer collapse) with the same protection and similarity as SLM."""
    default_threshold = 0.65
    cap_trials = True

    def name(self):
        return "laco"

    def rule(self):
        return "rdsc"

    def procedure(self, state, threshold, similarity, cap=None):
        return collapse(state, threshold, similarity, self.config.merge_size, self.config.interval, cap)
