"""What every pruning method shares: a config dataclass and a block visitor."""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import ClassVar

import torch
import torch.nn as nn

from ..engine import BlockVisitor
from ..errors import PrunekitError
from ..models.adapter import ModelAdapter
from ..solvers.masks import parse_pattern


@dataclass
class SparsityConfig:
    """Uniform sparsity over the decoder-block linears. With an N:M pattern the sparsity is
    1 - N/M and may be left out; a sparsity that disagrees with the pattern is an error."""
    sparsity: float | None = None
    pattern: str | None = None
    layers: str = "all"           # which blocks to prune: all, first-half, second-half, or A:B (0-based, B excluded)
    method: ClassVar[str] = ""

    def __post_init__(self):
        nm = parse_pattern(self.pattern)
        if nm is not None:
            implied = 1.0 - nm[0] / nm[1]
            if self.sparsity is None:
                self.sparsity = implied
            elif abs(self.sparsity - implied) > 1e-6:
                raise PrunekitError(
                    f"sparsity {self.sparsity:g} disagrees with pattern {self.pattern} "
                    f"(which keeps {nm[0]} of every {nm[1]}: sparsity {implied:g})")
            self.pattern = f"{nm[0]}:{nm[1]}"
        if self.sparsity is None:
            raise PrunekitError("give a sparsity (e.g. 0.5) or an N:M pattern")
        if not (0.0 <= self.sparsity < 1.0):
            raise PrunekitError(f"sparsity {self.sparsity:g} is outside [0, 1)")

    def blocks(self, num_layers: int) -> list[int]:
        return select_blocks(self.layers, num_layers)

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    def to_dict(self) -> dict:
        return asdict(self)


def select_blocks(spec: str | None, num_layers: int) -> list[int]:
    """Block indices named by 'all', 'first-half', 'second-half' or a slice 'A:B'."""
    if spec in (None, "", "all"):
        return list(range(num_layers))
    if spec == "first-half":
        return list(range(num_layers // 2))
    if spec == "second-half":
        return list(range(num_layers // 2, num_layers))
    try:
        a, b = spec.split(":")
        picked = list(range(num_layers))[slice(int(a) if a else None, int(b) if b else None)]
    except ValueError:
        raise PrunekitError(f"layers '{spec}' is not all, first-half, second-half or A:B") from None
    if not picked:
        raise PrunekitError(f"layers '{spec}' selects no block of {num_layers}")
    return picked


class OnlyBlocks(BlockVisitor):
    """Restricts a visitor to some blocks; the others are only forwarded."""

    def __init__(self, inner: BlockVisitor, blocks: list[int]):
        self.inner, self.blocks = inner, set(blocks)

    def observe(self, index, block):
        return self.inner.observe(index, block) if index in self.blocks else {}

    def edit(self, index, block):
        if index in self.blocks:
            self.inner.edit(index, block)


class LayerwiseMethod(BlockVisitor):
    """A method the engine drives block by block. Subclasses fill observe/edit."""
    needs_calibration: ClassVar[bool] = True

    def __init__(self, config, adapter: ModelAdapter):
        self.config = config
        self.adapter = adapter
        self.events: list[str] = []     # notable things (retries, fallbacks) for the report

    def check(self) -> None:
        """Reject impossible settings before anything is touched."""
        nm = getattr(self.config, "nm", None)
        blocks = self.config.blocks(self.adapter.num_layers)
        if nm:
            for name, lin in self.adapter.all_linears(blocks):
                if lin.in_features % nm[1]:
                    raise PrunekitError(
                        f"{name} has input dimension {lin.in_features}, not divisible by M={nm[1]} of pattern {self.config.pattern}")

    def summary(self) -> dict:
        """Method-specific facts for the report (counters, histories)."""
        return {}

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        return self.adapter.block_linears(block)


@torch.no_grad()
def apply_mask(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.masked_fill_(~keep.to(linear.weight.device), 0)
