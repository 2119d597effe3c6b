"""What the sparsity methods share: uniform sparsity (or an N:M pattern) over the decoder-block
linears of some blocks, and the layer-wise run: the engine visits each block, the method
observes its inputs and edits its weights in place."""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.nn as nn

from ...engine import BlockVisitor, LayerwiseEngine
from ...errors import ConfigError, PrunekitError
from ...solvers.masks import parse_pattern
from ...stats import sparsity_stats
from ..base import Job, Method
from ..options import MethodConfig, option, require
from ...progress import steps


@dataclass
class SparsityConfig(MethodConfig):
    """Uniform sparsity over the decoder-block linears. With an N:M pattern the sparsity is
    1 - N/M and may be left out; a sparsity that disagrees with the pattern is an error."""
    sparsity: float | None = option(
        None, "fraction of weights set to zero in every pruned linear, in [0, 1); implied by --pattern",
        default_text="none: give it or a pattern")
    pattern: str | None = option(
        None, "N:M semi-structured sparsity: at most N non-zeros in every M consecutive input weights "
              "(2:4, 4:8, 1:4; sparsity 1 - N/M). Papers that write the pruned count first call 1:4 '3:4'")
    layers: str = option("all", "blocks to prune: all, first-half, second-half or A:B (0-based, B excluded)")

    def __post_init__(self):
        nm = parse_pattern(self.pattern)
        if nm is not None:
            implied = 1.0 - nm[0] / nm[1]
            if self.sparsity is None:
                self.sparsity = implied
            else:
                require(abs(self.sparsity - implied) <= 1e-6,
                        f"{{sparsity}} {self.sparsity:g} disagrees with pattern {self.pattern} "
                        f"(which keeps {nm[0]} of every {nm[1]}: sparsity {implied:g})")
            self.pattern = f"{nm[0]}:{nm[1]}"
        require(self.sparsity is not None, "give a {sparsity} (e.g. 0.5) or an N:M {pattern}")
        require(0.0 <= self.sparsity < 1.0, f"{{sparsity}} {self.sparsity:g} is outside [0, 1)")

    def blocks(self, num_layers: int) -> list[int]:
        return select_blocks(self.layers, num_layers)

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)


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
        lo, hi = int(a) if a else 0, int(b) if b else num_layers
    except ValueError:
        raise PrunekitError(f"layers '{spec}' is not all, first-half, second-half or A:B") from None
    if not 0 <= lo < hi <= num_layers:   # refused, not clamped: the report would name blocks never pruned
        raise ConfigError(f"{{layers}} {spec} is outside the model's {num_layers} blocks "
                          f"(0-based A:B, B excluded: 0 <= A < B <= {num_layers})")
    return list(range(lo, hi))


class OnlyBlocks(BlockVisitor):
    """Restricts a visitor to some blocks; the others are only forwarded."""

    def __init__(self, inner: BlockVisitor, blocks: list[int]):
        self.inner, self.blocks = inner, set(blocks)

    def observe(self, index, block):
        return self.inner.observe(index, block) if index in self.blocks else {}

    def edit(self, index, block):
        if index in self.blocks:
            self.inner.edit(index, block)


class LayerwiseMethod(Method, BlockVisitor):
    """A sparsity method the engine drives block by block: subclasses fill observe/edit.
    Without calibration (`calibration = None`) only edit is called, block by block."""
    streamable = True

    def check(self) -> None:
        self.config.blocks(self.adapter.num_layers)   # a --layers range outside the model fails here
        nm = self.config.nm
        if nm:
            for name, lin in self.adapter.all_linears(self.config.blocks(self.adapter.num_layers)):
                if lin.in_features % nm[1]:
                    raise PrunekitError(f"{name} has input dimension {lin.in_features}, not divisible by M={nm[1]} "
                                        f"of pattern {self.config.pattern}")

    def run(self, job: Job) -> nn.Module:
        blocks = self.config.blocks(self.adapter.num_layers)
        if self.needs_calibration():
            visitor = self if len(blocks) == self.adapter.num_layers else OnlyBlocks(self, blocks)
            engine = LayerwiseEngine(self.adapter, job.device, progress=job.progress, batch=job.batch)
            io = job.blocks
            if io.start < self.adapter.num_layers:
                engine.run(job.input_ids, visitor, desc=self.name, start=io.start,
                           inputs=io.capture(engine, job.input_ids), load_block=io.load, release_block=io.release)
        else:
            self._edit_without_data(set(blocks), job)
        return self.adapter.model

    @torch.no_grad()
    def _edit_without_data(self, blocks: set[int], job: Job) -> None:
        layers, io = self.adapter.layers, job.blocks
        for i in steps(range(io.start, len(layers)), self.name, "block", enabled=job.progress):
            io.load(i)
            if i in blocks:
                block = layers[i].to(job.device)
                self.edit(i, block)
                layers[i] = block.to("cpu")
            io.release(i)

    def pruned_blocks(self) -> list[int]:
        return self.config.blocks(self.adapter.num_layers)

    def sparsity(self, model: nn.Module) -> dict:
        return sparsity_stats(self.adapter, self.pruned_blocks())

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        return self.adapter.block_linears(block)

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg = meth["config"]
        pat = f" pattern {cfg['pattern']}" if cfg.get("pattern") else ""
        layers = f" layers {cfg['layers']}" if cfg.get("layers", "all") != "all" else ""
        lines = [f"  method        {meth['name']} sparsity {cfg.get('sparsity', 0):.4g}{pat}{layers}"]
        if meth.get("cholesky_retries"):
            lines.append(f"  warnings      {meth['cholesky_retries']} Cholesky retries with more dampening (see report events)")
        return lines

    @classmethod
    def describe(cls, report: dict) -> dict:
        cfg = report["method"]["config"]
        what = cfg.get("pattern") or f"{cfg.get('sparsity', 0):.0%}"
        if cfg.get("layers", "all") != "all":
            what += f" ({cfg['layers']})"
        return {"method": report["method"]["name"], "what": what,
                "x": (report.get("sparsity") or {}).get("overall", 0.0)}
