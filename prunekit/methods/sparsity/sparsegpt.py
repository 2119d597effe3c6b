"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot", arXiv 2301.00774): every linear of a block pruned by the OBS solver from its input
Hessian, statistics from one pass over the unpruned block; see docs/methods.md."""
from __future__ import annotations

from dataclasses import dataclass
import torch

from ...errors import PrunekitError
from ...solvers.obs import sparsegpt_prune
from ...solvers.stats import InputHessian
from ..options import DampedConfig, option, require
from ..registry import register_method
from .base import LayerwiseMethod, SparsityConfig


@dataclass
class SparseGPTConfig(DampedConfig, SparsityConfig):
    blocksize: int = option(128, "OBS column block: columns pruned and updated together")

    def __post_init__(self):
        SparsityConfig.__post_init__(self)
        DampedConfig.__post_init__(self)
        require(self.blocksize >= 1, "{blocksize} must be at least 1")


def collect_hessians(method: LayerwiseMethod, names_linears: dict) -> dict:
    """Hooks that accumulate each linear's input Hessian into method.hessians."""
    method.hessians = {}
    hooks = {}
    for name, lin in names_linears.items():
        acc = InputHessian(lin.in_features, device=lin.weight.device)
        method.hessians[name] = acc
        hooks[lin] = lambda inp, out, acc=acc: acc.add_batch(inp)
    return hooks


def obs_logged(method: LayerwiseMethod, index: int, name: str, W: torch.Tensor, H: torch.Tensor, config,
               overwrite_h: bool = False):
    """SparseGPT on a weight matrix; Cholesky retries go into method.events and are counted."""
    if not torch.isfinite(H).all():
        raise PrunekitError(f"non-finite activations at the input of block {index} {name}: "
                            f"the model produces NaN/Inf on the calibration data (try float32)")
    W, info = sparsegpt_prune(W, H, config.sparsity, config.nm, config.blocksize, config.percdamp,
                              overwrite_h=overwrite_h)
    for line in info.log:
        method.events.append(f"block {index} {name}: {line}")
    method.cholesky_retries = getattr(method, "cholesky_retries", 0) + info.retries
    return W


@torch.no_grad()
def prune_linear_obs(method: LayerwiseMethod, index: int, name: str, lin, H: torch.Tensor, config,
                     overwrite_h: bool = False) -> None:
    """SparseGPT on one linear, in place."""
    lin.weight.copy_(obs_logged(method, index, name, lin.weight, H, config, overwrite_h).to(lin.weight.dtype))


@register_method("sparsegpt", SparseGPTConfig)
class SparseGPTPruner(LayerwiseMethod):
    @classmethod
    def example_config(cls):
        """Small settings for the tests' tiny models (5 blocks, calibration 4 x 16 tokens)."""
        return SparseGPTConfig(sparsity=0.5)

    carried = LayerwiseMethod.carried + ("cholesky_retries",)

    def observe(self, index, block):
        return collect_hessians(self, self.linears(block))

    def edit(self, index, block):
        for name, lin in self.linears(block).items():   # each Hessian freed once used
            prune_linear_obs(self, index, name, lin, self.hessians.pop(name).H, self.config, overwrite_h=True)
        self.hessians = {}

    def summary(self) -> dict:
        return {"cholesky_retries": getattr(self, "cholesky_retries", 0)}
