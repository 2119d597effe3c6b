# imported in this order so that methods are listed magnitude, wanda, sparsegpt, sparsellm
from .magnitude import MagnitudeConfig, MagnitudePruner
from .wanda import WandaConfig, WandaPruner
from .sparsegpt import SparseGPTConfig, SparseGPTPruner
from .sparsellm import SparseLLMConfig, SparseLLMPruner

__all__ = ["MagnitudeConfig", "MagnitudePruner", "WandaConfig", "WandaPruner", "SparseGPTConfig", "SparseGPTPruner",
           "SparseLLMConfig", "SparseLLMPruner"]
