"""prunekit: prune Hugging Face causal LMs and measure the result honestly."""
from .api import PruneResult, prune
from .data.calibration import Calibration, build_calibration
from .errors import ConfigError, PrunekitError
from .eval.ppl import perplexity
from .methods import (CalibrationDefaults, EvoDepthConfig, EvoSparsityConfig, Job, LaCoConfig, OWLConfig, MagnitudeConfig, Method, PPLConfig, SearchConfig,
                      ShortGPTConfig, SLEBConfig, SLMConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig,
                      register_method)
from .models.adapter import ModelAdapter
from .models.loading import load_model
from .workflows import (analyze_model, bench_model, evaluate_model, prune_model, recover_model, run_recipe,
                        stream_prune_model)
from .recovery import RecoveryConfig, RecoveryResult, recover

from .version import __version__

__all__ = ["prune", "PruneResult", "load_model", "perplexity", "build_calibration", "Calibration",
           "prune_model", "run_recipe", "evaluate_model", "analyze_model", "bench_model", "recover_model", "stream_prune_model", "recover", "RecoveryConfig",
           "RecoveryResult", "Method", "Job", "CalibrationDefaults", "register_method",
           "MagnitudeConfig", "WandaConfig", "SparseGPTConfig", "SparseLLMConfig", "SLMConfig", "LaCoConfig",
           "ShortGPTConfig", "SLEBConfig", "PPLConfig", "SearchConfig", "EvoDepthConfig", "EvoSparsityConfig", "OWLConfig", "ModelAdapter", "PrunekitError", "ConfigError"]
