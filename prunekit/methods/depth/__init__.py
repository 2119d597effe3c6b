from .removal import PPL, SLEB, PPLConfig, SLEBConfig, ShortGPT, ShortGPTConfig
from .slm import SLM, LaCo, LaCoConfig, SLMConfig

__all__ = ["SLM", "SLMConfig", "LaCo", "LaCoConfig", "ShortGPT", "ShortGPTConfig", "SLEB", "SLEBConfig",
           "PPL", "PPLConfig"]
