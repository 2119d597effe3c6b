"""Evolutionary compression search (EvoPress) over depth, per-block sparsity and per-block shapes, and OWL."""
from .depth import EvoDepth, EvoDepthConfig
from .owl import OWL, OWLConfig
from .shape import EvoShape, EvoShapeConfig
from .sparsity import EvoSparsity, EvoSparsityConfig

__all__ = ["EvoDepth", "EvoDepthConfig", "EvoShape", "EvoShapeConfig", "EvoSparsity", "EvoSparsityConfig", "OWL",
           "OWLConfig"]
