"""Registry: method name -> (config dataclass, implementation)."""
from __future__ import annotations

from ..errors import PrunekitError
from .depth import PPL, SLEB, SLM, LaCo, LaCoConfig, PPLConfig, ShortGPT, ShortGPTConfig, SLEBConfig, SLMConfig
from .width import SearchConfig, SearchMethod
from .sparsity.magnitude import MagnitudeConfig, MagnitudePruner
from .sparsity.sparsegpt import SparseGPTConfig, SparseGPTPruner
from .sparsity.sparsellm import SparseLLMConfig, SparseLLMPruner
from .sparsity.wanda import WandaConfig, WandaPruner

METHODS = {
    "magnitude": (MagnitudeConfig, MagnitudePruner),
    "wanda": (WandaConfig, WandaPruner),
    "sparsegpt": (SparseGPTConfig, SparseGPTPruner),
    "sparsellm": (SparseLLMConfig, SparseLLMPruner),
    "slm": (SLMConfig, SLM),
    "laco": (LaCoConfig, LaCo),
    "shortgpt": (ShortGPTConfig, ShortGPT),
    "sleb": (SLEBConfig, SLEB),
    "ppl": (PPLConfig, PPL),
    "search": (SearchConfig, SearchMethod),
}
DEPTH_METHODS = tuple(n for n, (_, impl) in METHODS.items() if getattr(impl, "kind", "") == "depth")


def method_for(config):
    for name, (cfg_cls, impl) in METHODS.items():
        if type(config) is cfg_cls:
            return name, impl
    raise PrunekitError(f"no method takes a {type(config).__name__}")


def config_class(name: str):
    if name not in METHODS:
        raise PrunekitError(f"unknown method '{name}': choose from {', '.join(METHODS)}")
    return METHODS[name][0]


__all__ = ["METHODS", "DEPTH_METHODS", "method_for", "config_class", "MagnitudeConfig", "WandaConfig",
           "SparseGPTConfig", "SparseLLMConfig", "SLMConfig", "LaCoConfig", "ShortGPTConfig", "SLEBConfig",
           "PPLConfig", "SearchConfig"]
