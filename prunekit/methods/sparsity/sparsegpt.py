"""SparseGPT: every linear of a block pruned by the OBS solver from its input Hessian,
statistics from one pass over the unpruned block (algorithms.md 4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...errors import PrunekitError
from ...solvers.obs import sparsegpt_prune
from ...solvers.stats import InputHessian
from ..base import LayerwiseMethod, SparsityConfig


@dataclass
class SparseGPTConfig(SparsityConfig):
    blocksize: int = 128
    percdamp: float = 0.01
    method: ClassVar[str] = "sparsegpt"

    def __post_init__(self):
        super().__post_init__()
        if self.blocksize < 1:
            raise PrunekitError("blocksize must be at least 1")
        if not self.percdamp > 0:
            raise PrunekitError("percdamp must be positive")


def collect_hessians(method: LayerwiseMethod, names_linears: dict) -> dict:
    """Hooks that accumulate each linear's input Hessian into method.hessians."""
    method.hessians = {}
    hooks = {}
    for name, lin in names_linears.items():
        acc = InputHessian(lin.in_features, device=lin.weight.device)
        method.hessians[name] = acc
        hooks[lin] = lambda inp, out, acc=acc: acc.add_batch(inp)
    return hooks


def obs_logged(method: LayerwiseMethod, index: int, name: str, W: torch.Tensor, H: torch.Tensor, config):
    """SparseGPT on a weight matrix; Cholesky retries go into method.events and are counted."""
    if not torch.isfinite(H).all():
        raise PrunekitError(f"non-finite activations at the input of block {index} {name}: "
                            f"the model produces NaN/Inf on the calibration data (try float32)")
    W, info = sparsegpt_prune(W, H, config.sparsity, config.nm, config.blocksize, config.percdamp)
    for line in info.log:
        method.events.append(f"block {index} {name}: {line}")
    method.cholesky_retries = getattr(method, "cholesky_retries", 0) + info.retries
    return W


@torch.no_grad()
def prune_linear_obs(method: LayerwiseMethod, index: int, name: str, lin, H: torch.Tensor, config) -> None:
    """SparseGPT on one linear, in place."""
    lin.weight.copy_(obs_logged(method, index, name, lin.weight, H, config).to(lin.weight.dtype))


class SparseGPTPruner(LayerwiseMethod):
    def observe(self, index, block):
        return collect_hessians(self, self.linears(block))

    def edit(self, index, block):
        for name, lin in self.linears(block).items():
            prune_linear_obs(self, index, name, lin, self.hessians[name].H, self.config)
        self.hessians = {}

    def summary(self) -> dict:
        return {"cholesky_retries": getattr(self, "cholesky_retries", 0)}
