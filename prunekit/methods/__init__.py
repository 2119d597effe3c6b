"""Pruning methods. Each registers itself beside its class (`@register_method`); importing this
package imports them in a stable order (sparsity, depth, width) and any other module under it."""
from __future__ import annotations

from .base import CalibrationDefaults, Job, Method
from .registry import all_methods, method_for, method_named, register_method
from .sparsity import MagnitudeConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig
from .depth import LaCoConfig, PPLConfig, ShortGPTConfig, SLEBConfig, SLMConfig
from .width import SearchConfig
from .evo import EvoDepthConfig, EvoShapeConfig, EvoSparsityConfig, OWLConfig

__all__ = ["Method", "Job", "CalibrationDefaults", "register_method", "all_methods", "method_for", "method_named",
           "MagnitudeConfig", "WandaConfig", "SparseGPTConfig", "SparseLLMConfig", "SLMConfig", "LaCoConfig",
           "ShortGPTConfig", "SLEBConfig", "PPLConfig", "SearchConfig", "EvoDepthConfig", "EvoShapeConfig", "EvoSparsityConfig",
           "OWLConfig"]
