"""What the depth methods share: how many blocks to remove, the evolving block list, and the
threshold bisection that turns a similarity-threshold method into an exact layer count."""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Callable, ClassVar

import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from .rebuild import merged_block, reindex


@dataclass
class DepthConfig:
    """Remove `remove_layers` decoder blocks, or the fraction `ratio` of them (rounded down:
    0.35 of 30 is 10). Threshold methods may instead take a threshold and remove what it gives."""
    remove_layers: int | None = None
    ratio: float | None = None
    method: ClassVar[str] = ""

    def __post_init__(self):
        if self.remove_layers is not None and self.ratio is not None:
            raise PrunekitError("give --remove-layers or --ratio, not both")
        if self.remove_layers is not None and self.remove_layers < 1:
            raise PrunekitError(f"--remove-layers must be at least 1 (got {self.remove_layers})")
        if self.ratio is not None and not (0.0 < self.ratio < 1.0):
            raise PrunekitError(f"--ratio {self.ratio:g} is outside (0, 1)")

    def target(self, num_layers: int) -> int | None:
        if self.remove_layers is not None:
            return self.remove_layers
        if self.ratio is not None:
            k = math.floor(self.ratio * num_layers + 1e-9)
            if k < 1:
                raise PrunekitError(f"--ratio {self.ratio:g} of {num_layers} layers removes no layer")
            return k
        return None

    def to_dict(self) -> dict:
        return asdict(self)


class DepthState:
    """The current block list and, for each block, the original indices it stands for."""

    def __init__(self, adapter: ModelAdapter, rule: str = "rdsc"):
        self.adapter = adapter
        self.rule = rule
        self.blocks: list[nn.Module] = list(adapter.layers)
        self.groups: list[list[int]] = [[i] for i in range(len(self.blocks))]
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
        gone = self.groups.pop(i)
        self.log.append({"removed": gone, **info})

    def untouched_below(self, i: int) -> bool:
        """Whether current blocks 0..i are still the original blocks 0..i."""
        return all(g == [j] for j, g in enumerate(self.groups[:i + 1]))

    def install(self) -> None:
        """Make the model's decoder exactly the current block list (physically smaller)."""
        layers = self.adapter.layers
        while len(layers):
            del layers[len(layers) - 1]
        for b in self.blocks:
            layers.append(b)
        reindex(self.adapter, [g[0] for g in self.groups])


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


class DepthMethod:
    """A whole-model method: it edits a DepthState using calibration forwards."""
    needs_calibration: ClassVar[bool] = True
    kind: ClassVar[str] = "depth"
    protects_last: ClassVar[bool] = False

    def __init__(self, config: DepthConfig, adapter: ModelAdapter):
        self.config = config
        self.adapter = adapter
        self.events: list[str] = []
        self.details: dict = {}

    def check(self) -> None:
        n = self.adapter.num_layers
        k = self.config.target(n)
        most = self.most_removable(n)
        if k is not None and k > most:
            raise PrunekitError(f"cannot remove {k} of {n} layers with {self.name()}: at most {most}")

    def most_removable(self, n: int) -> int:
        return n - 1 - int(self.protects_last)

    def name(self) -> str:
        return type(self).__name__

    def run(self, stack, state: DepthState, progress: bool = True) -> None:
        raise NotImplementedError

    def summary(self) -> dict:
        return self.details
