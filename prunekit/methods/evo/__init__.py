"""Evolutionary compression search (EvoPress) over depth and per-block sparsity, and OWL."""
from .depth import EvoDepth, EvoDepthConfig
from .owl import OWL, OWLConfig
from .sparsity import EvoSparsity, EvoSparsityConfig

__all__ = ["EvoDepth", "EvoDepthConfig", "EvoSparsity", "EvoSparsityConfig", "OWL", "OWLConfig"]
