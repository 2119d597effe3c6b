"""prunekit: prune Hugging Face causal LMs and measure the result honestly."""
from .api import PruneResult, prune
from .data.calibration import Calibration, build_calibration
from .errors import PrunekitError

from .eval.ppl import perplexity
from .methods import MagnitudeConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig
from .models.adapter import ModelAdapter
from .models.loading import load_model
from .recovery import RecoveryConfig, RecoveryResult, recover

__version__ = "0.1.0"

__all__ = ["prune", "PruneResult", "load_model", "perplexity", "build_calibration", "Calibration",
           "MagnitudeConfig", "WandaConfig", "SparseGPTConfig", "SparseLLMConfig", "ModelAdapter", "PrunekitError",
           "recover", "RecoveryConfig", "RecoveryResult"]
