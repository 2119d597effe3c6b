"""Depth baselines that remove whole blocks: ShortGPT's block influence (Men et al. 2024,
"ShortGPT: Layers in Large Language Models are More Redundant Than You Expect", arXiv 2403.03853),
SLEB's greedy calibration-NLL removal (Song et al. 2024, "SLEB: Streamlining LLMs through
Redundancy Verification and Elimination of Transformer Blocks", arXiv 2402.09025) and
Shortened-LLM's one-shot perplexity criterion (Kim et al. 2024, "Shortened LLaMA: Depth Pruning
for Large Language Models", arXiv 2402.02834); see docs/methods.md."""
from __future__ import annotations

import math
from dataclasses import dataclass


from ...solvers.similarity import block_influence
from ..options import option, require
from ..registry import register_method
from .base import DepthConfig, DepthMethod, DepthState
from ...progress import bar as progress_bar, steps


class _CountedRemoval(DepthMethod):
    streamable = True      # scoring passes stream block by block; kept blocks are copied as they are
    def check(self) -> None:
        require(self.config.target(self.adapter.num_layers) is not None,
                f"{self.name} needs {{remove_layers}} or {{ratio}}")
        super().check()


@dataclass
class ShortGPTConfig(DepthConfig):
    pass


@register_method("shortgpt", ShortGPTConfig)
class ShortGPT(_CountedRemoval):
    """Remove the k blocks of lowest block influence 1 - cos(input, output), measured once on
    the dense model over calibration tokens (the raw last-block output, not the normed one)."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return ShortGPTConfig(remove_layers=2)

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        k = self.config.target(len(state))
        states = stack.all_inputs(state.blocks)
        bi = [block_influence(states[i], states[i + 1]) for i in range(len(state))]
        drop = sorted(sorted(range(len(bi)), key=lambda i: (bi[i], i))[:k], reverse=True)
        for i in drop:
            state.remove(i, block_influence=bi[i])
        self.details.update(block_influence=bi, removed=sorted(drop))


@dataclass
class SLEBConfig(DepthConfig):
    pass


@register_method("sleb", SLEBConfig)
class SLEB(_CountedRemoval):
    """Greedy: k times, skip each alive block except the first and the last alive one, keep the
    removal with the lowest calibration NLL. Only the blocks after the candidate are re-run."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SLEBConfig(remove_layers=1)

    def most_removable(self, n):
        return n - 2

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        k = self.config.target(len(state))
        inputs = stack.all_inputs(state.blocks)
        rounds = []
        bar = progress_bar(sum(len(state) - 2 - r for r in range(k)), "sleb candidates", "candidate", progress)
        for _ in range(k):
            nll = {}
            for i in range(1, len(state) - 1):
                nll[i] = stack.nll(stack.through(state.blocks[i + 1:], inputs[i]))
                bar.update(1)
            best = min(nll, key=lambda i: (nll[i], i))
            original = state.groups[best]
            # keyed by original block index: current positions shift after every removal
            by_block = {str(state.groups[i][0]): math.exp(v) for i, v in nll.items()}
            state.remove(best, calibration_ppl=math.exp(nll[best]))
            rounds.append({"removed": original, "calibration_ppl": by_block})
            inputs = inputs[:best + 1]          # inputs of blocks before `best` are unchanged
            for block in state.blocks[best:]:
                inputs.append(stack.through([block], inputs[-1]))
        bar.close()
        self.details.update(rounds=rounds, removed=sorted(i for r in rounds for i in r["removed"]))


@dataclass
class PPLConfig(DepthConfig):
    plus_heuristic: bool = option(True, "never remove blocks 0-3 and the last two (the reference script's default)")


@register_method("ppl", PPLConfig)
class PPL(_CountedRemoval):
    """Shortened-LLM's PPL criterion: delete each block alone, measure calibration perplexity,
    remove the k blocks whose deletion hurts least, all at once."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return PPLConfig(remove_layers=1, plus_heuristic=False)

    def protected(self, n: int) -> set[int]:
        return {0, 1, 2, 3, n - 2, n - 1} if self.config.plus_heuristic else set()

    def most_removable(self, n):
        return n - max(1, len(self.protected(n)))

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        k = self.config.target(len(state))
        n = len(state)
        inputs = stack.all_inputs(state.blocks)
        candidates = [i for i in range(n) if i not in self.protected(n)]
        ppl = {}
        for i in steps(candidates, "ppl criterion", "block", enabled=progress):
            ppl[i] = math.exp(stack.nll(stack.through(state.blocks[i + 1:], inputs[i])))
        drop = sorted(sorted(ppl, key=lambda i: (ppl[i], i))[:k], reverse=True)
        for i in drop:
            state.remove(i, calibration_ppl=ppl[i])
        self.details.update(calibration_ppl={str(i): v for i, v in ppl.items()}, removed=sorted(drop),
                            protected=sorted(self.protected(n)))
