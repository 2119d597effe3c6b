"""Depth baselines that remove whole blocks: ShortGPT's block influence (Men et al. 2024,
"ShortGPT: Layers in Large Language Models are More Redundant Than You Expect", arXiv 2403.03853),
SLEB's greedy calibration-NLL removal (Song et al. 2024, "SLEB: Streamlining LLMs through
Redundancy Verification and Elimination of Transformer Blocks", arXiv 2402.09025) and
Shortened-LLM's one-shot perplexity criterion (Kim et al. 2024, "Shortened LLaMA: Depth Pruning
for Large Language Models", arXiv 2402.02834); see docs/methods.md.

With `unit="sublayer"` each block's attention and MLP are removal units of their own, as in
BlockPruner (Zhong et al. 2024, arXiv 2406.10594: iterative, by perplexity) and FinerCut (Zhang
et al. 2024, arXiv 2405.18218: by output similarity); the same three criteria then score units.
A block left with one sublayer is saved in the DeciLM layout (models/decilm.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass


from ...engine.sublayers import skipping
from ...errors import PrunekitError
from ...solvers.similarity import block_influence
from ..options import option, require
from ..registry import register_method
from .base import DepthConfig, DepthMethod, DepthState, UnitOption, check_sublayer_units
from ...progress import bar as progress_bar, steps

BLOCK = "block"     # a unit's part when the unit is a whole block


@dataclass
class RemovalConfig(DepthConfig, UnitOption):
    """What the removal methods share: the unit removed and the parameter target."""
    keep: float | None = option(None, "instead of a count: remove units in the method's order until at most this "
                                      "fraction of the decoder-block projection parameters is kept")

    def __post_init__(self):
        super().__post_init__()
        self.check_unit()
        if self.keep is not None:
            require(self.remove_layers is None and self.ratio is None, "give {keep} or a count, not both")
            require(0.0 < self.keep < 1.0, f"{{keep}} {self.keep:g} is outside (0, 1)")


class _CountedRemoval(DepthMethod):
    streamable = True      # scoring passes stream block by block; kept blocks are copied as they are

    @classmethod
    def builds_new_model(cls, config) -> bool | None:
        # a block that keeps one sublayer needs a model in the DeciLM layout; whole blocks do not
        return None if config.unit == "sublayer" else False

    def check(self) -> None:
        cfg = self.config
        require(cfg.target(cfg.units_in(self.adapter.num_layers)) is not None or cfg.keep is not None,
                f"{self.name} needs {{remove_layers}}, {{ratio}} or {{keep}}")
        if cfg.unit == "sublayer":
            check_sublayer_units(self, cfg.target(cfg.units_in(self.adapter.num_layers)))
        else:
            super().check()

    # units: (original block, part), part "block" for a whole block
    def units(self, state: DepthState, positions) -> list[tuple[int, str]]:
        if self.config.unit == BLOCK:
            return [(state.groups[i][0], BLOCK) for i in positions]
        return [(state.groups[i][0], p) for i in positions for p in ("attention", "mlp") if p in state.parts[i]]

    def done(self, state: DepthState, removed: int) -> bool:
        if self.config.keep is not None:
            return state.kept_params() <= self.config.keep * state.total_params
        return removed >= self.config.target(self.config.units_in(self.adapter.num_layers))

    def remove(self, state: DepthState, unit: tuple[int, str], **info) -> None:
        i = state.position(unit[0])
        if unit[1] == BLOCK:
            state.remove(i, **info)
        else:
            state.remove_part(i, unit[1], **info)

    def remove_in_order(self, state: DepthState, order: list[tuple[int, str]], score_name: str, scores: dict) -> list:
        """Remove units in `order` until the target is met; the units removed."""
        removed = []
        for unit in order:
            if self.done(state, len(removed)):
                break
            self.remove(state, unit, **{score_name: scores[unit]})
            removed.append(unit)
        if not self.done(state, len(removed)):
            raise PrunekitError(f"{self.name} ran out of removable units before reaching the target "
                                f"({state.kept_params() / state.total_params:.3f} of the block parameters kept)")
        return removed

    def run_without(self, stack, state: DepthState, unit: tuple[int, str], hidden):
        """The last block's output when `unit` is left out, from the input of its block."""
        i = state.position(unit[0])
        if unit[1] == BLOCK:
            return stack.through(state.blocks[i + 1:], hidden)
        with skipping(self.adapter, [(state.blocks[i], unit[1])]):
            return stack.through(state.blocks[i:], hidden)

    def record(self, removed: list, key: str, scores: dict) -> None:
        """The report's view of the removals and the scores (blocks by number, sublayers by name)."""
        if self.config.unit == BLOCK:
            self.details.update({"removed": sorted(u[0] for u in removed), key: scores})
        else:
            self.details.update({"removed_units": [list(u) for u in removed],
                                 key: {f"{i}.{p}": v for (i, p), v in scores.items()}})


def sublayer_influence(stack, state: DepthState, adapter) -> dict:
    """Block influence 1 - cos(input, output) of every sublayer still in use: attention from the
    block's input to its output without the MLP, MLP from there to the block's output."""
    with skipping(adapter, state.skipped()):
        states = stack.all_inputs(state.blocks)
        scores = {}
        for i, block in enumerate(state.blocks):
            mid = states[i]
            if "attention" in state.parts[i]:
                if "mlp" in state.parts[i]:
                    with skipping(adapter, [(block, "mlp")]):
                        mid = stack.through([block], states[i])
                else:
                    mid = states[i + 1]
                scores[(state.groups[i][0], "attention")] = block_influence(states[i], mid)
            if "mlp" in state.parts[i]:
                scores[(state.groups[i][0], "mlp")] = block_influence(mid, states[i + 1])
    return scores


@dataclass
class ShortGPTConfig(RemovalConfig):
    pass


@register_method("shortgpt", ShortGPTConfig)
class ShortGPT(_CountedRemoval):
    """Remove the units of lowest block influence 1 - cos(input, output), measured once on the
    dense model over calibration tokens (the raw last-block output, not the normed one)."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return ShortGPTConfig(remove_layers=2)

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        if self.config.unit == BLOCK:
            with skipping(self.adapter, state.skipped()):
                states = stack.all_inputs(state.blocks)
            bi = [block_influence(states[i], states[i + 1]) for i in range(len(state))]
            scores = {(state.groups[i][0], BLOCK): v for i, v in enumerate(bi)}
        else:
            scores = sublayer_influence(stack, state, self.adapter)
        order = sorted(scores, key=lambda u: (scores[u], u))
        removed = self.remove_in_order(state, order, "block_influence", scores)
        if self.config.unit == BLOCK:
            self.details.update(block_influence=bi, removed=sorted(u[0] for u in removed))
        else:
            self.record(removed, "block_influence", scores)


@dataclass
class SLEBConfig(RemovalConfig):
    pass


@register_method("sleb", SLEBConfig)
class SLEB(_CountedRemoval):
    """Greedy: until the target is met, leave out each unit of every alive block except the first
    and the last alive one, keep the removal with the lowest calibration NLL. Only the blocks
    from the candidate on are re-run."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SLEBConfig(remove_layers=1)

    def most_removable(self, n):
        return n - 2

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        with skipping(self.adapter, state.skipped()):
            inputs = stack.all_inputs(state.blocks)
        rounds, removed = [], []
        target = None if self.config.keep is not None else self.config.target(self.config.units_in(self.adapter.num_layers))
        bar = progress_bar(target, "sleb rounds", "removal", progress)
        while not self.done(state, len(removed)):
            candidates = self.units(state, range(1, len(state) - 1))
            if not candidates:
                raise PrunekitError("sleb ran out of removable units before reaching the target")
            nll = {}
            with skipping(self.adapter, state.skipped()):
                for unit in candidates:
                    nll[unit] = stack.nll(self.run_without(stack, state, unit, inputs[state.position(unit[0])]))
            best = min(nll, key=lambda u: (nll[u], u))
            i = state.position(best[0])
            self.remove(state, best, calibration_ppl=math.exp(nll[best]))
            removed.append(best)
            rounds.append({"removed": [best[0]] if best[1] == BLOCK else list(best),
                           "calibration_ppl": {_key(u): math.exp(v) for u, v in nll.items()}})
            inputs = inputs[:i + 1]          # inputs of blocks before the change are unchanged
            with skipping(self.adapter, state.skipped()):
                for block in state.blocks[i:]:
                    inputs.append(stack.through([block], inputs[-1]))
            bar.update(1)
        bar.close()
        self.details.update(rounds=rounds)
        if self.config.unit == BLOCK:
            self.details.update(removed=sorted(u[0] for u in removed))
        else:
            self.details.update(removed_units=[list(u) for u in removed])


def _key(unit) -> str:
    """A unit as a report key: the original block's number, with the sublayer for a sublayer unit."""
    return str(unit[0]) if unit[1] == BLOCK else f"{unit[0]}.{unit[1]}"


@dataclass
class PPLConfig(RemovalConfig):
    plus_heuristic: bool = option(True, "never remove blocks 0-3 and the last two (the reference script's default)")


@register_method("ppl", PPLConfig)
class PPL(_CountedRemoval):
    """Shortened-LLM's PPL criterion: leave out each unit alone, measure calibration perplexity,
    remove the units whose absence hurts least, all at once."""

    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return PPLConfig(remove_layers=1, plus_heuristic=False)

    def protected(self, n: int) -> set[int]:
        return {0, 1, 2, 3, n - 2, n - 1} if self.config.plus_heuristic else set()

    def most_removable(self, n):
        return n - max(1, len(self.protected(n)))

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        n = len(state)
        with skipping(self.adapter, state.skipped()):
            inputs = stack.all_inputs(state.blocks)
            candidates = self.units(state, [i for i in range(n) if i not in self.protected(n)])
            ppl = {}
            for unit in steps(candidates, "ppl criterion", "unit", enabled=progress):
                ppl[unit] = math.exp(stack.nll(self.run_without(stack, state, unit, inputs[state.position(unit[0])])))
        order = sorted(ppl, key=lambda u: (ppl[u], u))
        removed = self.remove_in_order(state, order, "calibration_ppl", ppl)
        self.details.update(calibration_ppl={_key(u): v for u, v in ppl.items()}, protected=sorted(self.protected(n)))
        if self.config.unit == BLOCK:
            self.details.update(removed=sorted(u[0] for u in removed))
        else:
            self.details.update(removed_units=[list(u) for u in removed])
