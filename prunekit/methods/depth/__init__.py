# imported in this order so that methods are listed slm, laco, shortgpt, sleb, ppl
from .slm import SLM, LaCo, LaCoConfig, SLMConfig
from .removal import PPL, SLEB, PPLConfig, SLEBConfig, ShortGPT, ShortGPTConfig

__all__ = ["SLM", "SLMConfig", "LaCo", "LaCoConfig", "ShortGPT", "ShortGPTConfig", "SLEB", "SLEBConfig",
           "PPL", "PPLConfig"]
