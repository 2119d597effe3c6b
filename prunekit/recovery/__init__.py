"""LoRA recovery fine-tuning of pruned models (issue 15): sparse models stay sparse."""
from .api import RecoveryResult, recover
from .config import RecoveryConfig

__all__ = ["recover", "RecoveryConfig", "RecoveryResult"]
