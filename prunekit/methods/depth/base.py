"""What the depth methods share: how many blocks to remove, the evolving block list, the
threshold bisection that turns a similarity-threshold method into an exact layer count, and the
depth run: calibration forwards through a block stack, then the decoder replaced by the
resulting (fewer) blocks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from ...models import decilm
from ...models.decilm import BlockShape, block_shape, to_decilm
from ..base import CalibrationDefaults, Job, Method
from ..options import MethodConfig, option, require
from .rebuild import merged_block, reindex


@dataclass
class DepthConfig(MethodConfig):
    """Remove `remove_layers` decoder blocks, or the fraction `ratio` of them (rounded down:
    0.35 of 30 is 10). Threshold methods may instead take a threshold and remove what it gives."""
    remove_layers: int | None = option(None, "number of decoder blocks to remove")
    ratio: float | None = option(None, "fraction of decoder blocks to remove, rounded down (0.2 of 30 = 6, "
                                       "0.35 of 30 = 10)")

    def __post_init__(self):
        require(self.remove_layers is None or self.ratio is None, "give {remove_layers} or {ratio}, not both")
        require(self.remove_layers is None or self.remove_layers >= 1,
                f"{{remove_layers}} must be at least 1 (got {self.remove_layers})")
        if self.ratio is not None:
            require(0.0 < self.ratio < 1.0, f"{{ratio}} {self.ratio:g} is outside (0, 1)")

    def target(self, num_layers: int) -> int | None:
        if self.remove_layers is not None:
            return self.remove_layers
        if self.ratio is not None:
            k = math.floor(self.ratio * num_layers + 1e-9)
            require(k >= 1, f"{{ratio}} {self.ratio:g} of {num_layers} layers removes no layer")
            return k
        return None


UNITS = ("block", "sublayer")


@dataclass
class UnitOption:
    """What a removal removes: whole blocks, or each block's attention and MLP on their own."""
    unit: str = option("block", "what is removed: block (whole decoder blocks) or sublayer (each block's attention "
                                "and MLP on their own, as BlockPruner and FinerCut do); with sublayer, "
                                "--remove-layers and --ratio count sublayers, and a block that keeps one is saved "
                                "in the Nemotron-NAS (DeciLM) layout", choices=UNITS)

    def check_unit(self) -> None:
        require(self.unit in UNITS, f"{{unit}} {self.unit}: choose {' or '.join(UNITS)}")

    def units_in(self, num_layers: int) -> int:
        return num_layers * (2 if self.unit == "sublayer" else 1)


def check_sublayer_units(method, k: int | None) -> None:
    """Removal by sublayer: the model must fit the DeciLM layout and at least one unit must stay."""
    reason = decilm.why_not(method.adapter)
    require(reason is None, f"{{unit}} sublayer saves blocks in the Nemotron-NAS (DeciLM) layout, which "
                            f"cannot state this model: {reason}")
    most = 2 * method.adapter.num_layers - 1
    if k is not None and k > most:
        raise PrunekitError(f"cannot remove {k} of {most + 1} sublayers with {method.name}: at most {most}")


class DepthState:
    """The current block list and, for each block, the original indices it stands for."""

    def __init__(self, adapter: ModelAdapter, rule: str = "rdsc"):
        self.adapter = adapter
        self.rule = rule
        self.model = adapter.model      # install() may build another (a block that lost a sublayer)
        self.blocks: list[nn.Module] = list(adapter.layers)
        self.groups: list[list[int]] = [[i] for i in range(len(self.blocks))]
        # each block's sublayers still in use, and the projection parameters of each
        self.parts: list[set[str]] = [set(adapter.sublayers(b)) for b in self.blocks]
        self.unit_params = [{p: sum(_numel(lin) for lin in adapter.sublayer_linears(b, p)) for p in parts}
                            for b, parts in zip(self.blocks, self.parts)]
        self.total_params = self.kept_params()
        self.log: list[dict] = []

    def __len__(self):
        return len(self.blocks)

    def with_merged(self, lo: int, hi: int) -> list[nn.Module]:
        """The block list if current blocks lo..hi were merged (nothing is changed)."""
        return self.blocks[:lo] + [merged_block(self.adapter, self.blocks[lo:hi + 1], self.rule)] + self.blocks[hi + 1:]

    def without(self, i: int) -> list[nn.Module]:
        return self.blocks[:i] + self.blocks[i + 1:]

    def merge(self, lo: int, hi: int, **info) -> None:
        self.blocks[lo:hi + 1] = [merged_block(self.adapter, self.blocks[lo:hi + 1], self.rule)]
        merged = [i for g in self.groups[lo:hi + 1] for i in g]
        self.groups[lo:hi + 1] = [merged]
        self.log.append({"merged": merged, **info})

    def remove(self, i: int, **info) -> None:
        del self.blocks[i]
        del self.parts[i]
        gone = self.groups.pop(i)
        self.log.append({"removed": gone, **info})

    def remove_part(self, i: int, part: str, **info) -> None:
        """Leave out one sublayer of current block i; a block left with none is removed."""
        self.parts[i].discard(part)
        self.log.append({"removed_sublayer": [self.groups[i][0], part], **info})
        if not self.parts[i]:
            self.remove(i)

    def position(self, original: int) -> int | None:
        """The current position of original block `original` (None once removed or merged away)."""
        return next((j for j, g in enumerate(self.groups) if g == [original]), None)

    def kept_params(self) -> int:
        """Projection parameters of the sublayers still in use (merged blocks count as their base)."""
        return sum(self.unit_params[g[0]][p] for g, parts in zip(self.groups, self.parts) for p in parts)

    def skipped(self) -> list[tuple[nn.Module, str]]:
        """(block, sublayer) pairs that are left out but still physically there (engine.sublayers)."""
        return [(b, p) for b, parts in zip(self.blocks, self.parts) for p in self.adapter.sublayers(b)
                if p not in parts]

    def shapes(self) -> list[BlockShape]:
        """Each kept block's shape in the DeciLM layout (a left-out sublayer is a no-op part)."""
        return [block_shape(self.adapter, b, parts) for b, parts in zip(self.blocks, self.parts)]

    def removed_sublayers(self) -> list[list]:
        """[original block, sublayer] of every sublayer left out of a kept block."""
        return [[g[0], p] for b, g, parts in zip(self.blocks, self.groups, self.parts)
                for p in self.adapter.sublayers(b) if p not in parts]

    def untouched_below(self, i: int) -> bool:
        """Whether current blocks 0..i are still the original blocks 0..i."""
        return all(g == [j] for j, g in enumerate(self.groups[:i + 1]))

    def keep(self, groups: list[list[int]]) -> None:
        """Make the state the removal plan `groups` (each a single original block) of an earlier search."""
        if any(len(g) != 1 for g in groups):
            raise PrunekitError(f"plan {groups} merges blocks: only a removal plan can be taken over")
        originals = list(self.adapter.layers)
        self.blocks, self.groups = [originals[g[0]] for g in groups], [list(g) for g in groups]
        self.parts = [set(self.adapter.sublayers(b)) for b in self.blocks]

    def install(self) -> None:
        """Make the model exactly the current block list (physically smaller): the same model with
        fewer blocks, or, when a kept block lost a sublayer, a model in the DeciLM layout."""
        if self.skipped():
            self.model = to_decilm(self.adapter, self.blocks, self.shapes())
            return
        self.adapter.replace_layers(self.blocks)
        reindex(self.adapter, [g[0] for g in self.groups])


def _numel(lin: nn.Linear) -> int:
    return lin.weight.numel() + (0 if lin.bias is None else lin.bias.numel())


def bisect_threshold(removed_at: Callable[[float], int], k: int, steps: int = 16,
                     lo: float = -1.0, hi: float = 1.0) -> tuple[float, list[tuple[float, int]]]:
    """The largest threshold (to `steps` halvings) at which the procedure removes at least k
    blocks; the count grows as the threshold falls (monotone in practice, not provably).
    Returns the threshold and the (threshold, count) trail."""
    trail = []
    n_lo = removed_at(lo)
    trail.append((lo, n_lo))
    if n_lo < k:
        raise PrunekitError(f"even the lowest threshold removes only {n_lo} blocks, fewer than the {k} requested")
    for _ in range(steps):
        mid = (lo + hi) / 2
        n = removed_at(mid)
        trail.append((mid, n))
        if n >= k:
            lo = mid
        else:
            hi = mid
    return lo, trail


class DepthMethod(Method):
    """A whole-model method: it edits a DepthState using calibration forwards through a
    BlockStack (`search`), then the decoder becomes the state's blocks."""
    calibration = CalibrationDefaults(nsamples=10, seqlen=128)
    protects_last: ClassVar[bool] = False

    def check(self) -> None:
        n = self.adapter.num_layers
        k = self.config.target(n)
        most = self.most_removable(n)
        if k is not None and k > most:
            raise PrunekitError(f"cannot remove {k} of {n} layers with {self.name}: at most {most}")

    def most_removable(self, n: int) -> int:
        return n - 1 - int(self.protects_last)

    def run(self, job: Job) -> nn.Module:
        before = self.adapter.num_layers
        state = DepthState(self.adapter)
        plan = job.blocks.saved_plan()
        if plan is None:
            stack = job.blocks.stack(self.adapter, job.input_ids, job.device)
            self.search(stack, state, job.progress)
            self.details["depth"] = {"layers_before": before, "layers_after": len(state.groups),
                                     "layers_removed": before - len(state.groups), "groups": state.groups,
                                     "block_forwards": stack.forwards}
            if state.skipped():
                self.details["depth"].update(sublayers_removed=state.removed_sublayers(),
                                             kept_params=state.kept_params(), block_params=state.total_params)
        else:           # a resumed run: the plan and the report section (restored) were chosen before
            state.keep(plan)
        job.blocks.apply_plan(state)
        return state.model

    def search(self, stack, state: DepthState, progress: bool = True) -> None:
        """Edit `state` (remove or merge blocks) from calibration forwards through `stack`."""
        raise NotImplementedError

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        d = meth["depth"]
        lines = [f"  method        {meth['name']}" + (f" threshold {meth['threshold']:.4g}" if "threshold" in meth else "")]
        merged = ", ".join(f"{g[0]}-{g[-1]}" for g in d["groups"] if len(g) > 1)
        kept = {i for g in d["groups"] for i in g}
        gone = [i for i in range(d["layers_before"]) if i not in kept]
        lines.append(f"  layers        {d['layers_before']} -> {d['layers_after']}"
                     + (f"; merged {merged}" if merged else "") + (f"; removed {gone}" if gone else ""))
        if d.get("sublayers_removed"):
            by_part = {p: [i for i, q in d["sublayers_removed"] if q == p] for p in ("attention", "mlp")}
            lines.append("  sublayers     left out: " + "; ".join(f"{p} of {v}" for p, v in by_part.items() if v)
                         + f" ({d['kept_params'] / d['block_params']:.3f} of the block projections kept)")
        return lines

    @classmethod
    def describe(cls, report: dict) -> dict:
        meth = report["method"]
        cfg, d = meth["config"], meth["depth"]
        return {"method": meth["name"] + (f"-{cfg['merge']}" if cfg.get("merge") else ""),
                "what": f"{d['layers_removed']}/{d['layers_before']} layers", "x": d["layers_removed"] / d["layers_before"]}
