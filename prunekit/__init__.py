"""prunekit: prune Hugging Face causal LMs and measure the result honestly."""
from .api import PruneResult, prune
from .data.calibration import Calibration, build_calibration
from .errors import ConfigError, PrunekitError
from .eval.ppl import perplexity
from .methods import (CalibrationDefaults, Job, LaCoConfig, MagnitudeConfig, Method, PPLConfig, SearchConfig,
                      ShortGPTConfig, SLEBConfig, SLMConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig,
                      register_method)
from .models.adapter import ModelAdapter
from .models.loading import load_model
from .workflows import analyze_model, bench_model, evaluate_model, prune_model, run_recipe
from .recovery import RecoveryConfig, RecoveryResult, recover

__version__ = "0.1.0"

__all__ = ["prune", "PruneResult", "load_model", "perplexity", "build_calibration", "Calibration",
           "prune_model", "run_recipe", "evaluate_model", "analyze_model", "bench_model", "recover", "RecoveryConfig",
           "RecoveryResult", "Method", "Job", "CalibrationDefaults", "register_method",
           "MagnitudeConfig", "WandaConfig", "SparseGPTConfig", "SparseLLMConfig", "SLMConfig", "LaCoConfig",
           "ShortGPTConfig", "SLEBConfig", "PPLConfig", "SearchConfig", "ModelAdapter", "PrunekitError", "ConfigError"]
