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

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    def to_dict(self) -> dict:
        return asdict(self)


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
        if nm:
            for name, lin in self.adapter.all_linears():
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
