"""LoRA recovery fine-tuning of pruned models, a stage of a recipe or its own command: sparse
models stay sparse."""
from .api import RecoveryResult, recover
from .config import RecoveryConfig

__all__ = ["recover", "RecoveryConfig", "RecoveryResult"]
