"""Tiny random models that keep each family's real structure: sliding windows shorter than the
test window, several layer types with their own masks and rotary bases, head_dim != hidden /
heads where the family allows it, fused projections (Phi-3). Small in every dimension.

STRUCTURED_FAMILIES lists every family; ADAPTED_FAMILIES the ones the adapter accepts (all of them)."""
from __future__ import annotations

import torch

from .conftest import VOCAB

WINDOW = 16          # test window: longer than every sliding window below
SLIDING = 5
LAYERS = 5

STRUCTURED_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "opt"]
ADAPTED_FAMILIES = list(STRUCTURED_FAMILIES)
NO_SDPA = {"gemma2"}    # transformers refuses sdpa for Gemma 2 (attention logit soft-capping)

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
               pad_token_id=0)


def _types(layers: int, pattern: str) -> list[str]:
    """'ssf' -> sliding, sliding, full, sliding, sliding, full, ..."""
    names = {"s": "sliding_attention", "f": "full_attention"}
    return [names[pattern[i % len(pattern)]] for i in range(layers)]


def _llama(n):
    from transformers import LlamaConfig
    return LlamaConfig(**_COMMON, num_hidden_layers=n, tie_word_embeddings=False)


def _mistral(n):
    from transformers import MistralConfig
    return MistralConfig(**_COMMON, num_hidden_layers=n, sliding_window=SLIDING, tie_word_embeddings=False)


def _qwen2(n):
    from transformers import Qwen2Config
    # Qwen2's own rule: layers from max_window_layers on use the sliding window
    return Qwen2Config(**_COMMON, num_hidden_layers=n, use_sliding_window=True, sliding_window=SLIDING,
                       max_window_layers=2, tie_word_embeddings=False)


def _qwen3(n):
    from transformers import Qwen3Config
    return Qwen3Config(**_COMMON, num_hidden_layers=n, head_dim=24, use_sliding_window=True,
                       sliding_window=SLIDING, layer_types=_types(n, "sf"), tie_word_embeddings=False)


def _gemma2(n):
    from transformers import Gemma2Config
    return Gemma2Config(**_COMMON, num_hidden_layers=n, head_dim=24, sliding_window=SLIDING,
                        layer_types=_types(n, "sf"), query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0, tie_word_embeddings=True)


def _gemma3(n):
    from transformers import Gemma3TextConfig
    # local and global layers: other masks, other rotary bases, linear rope scaling on the global ones
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}}
    return Gemma3TextConfig(**_COMMON, num_hidden_layers=n, head_dim=24, sliding_window=SLIDING,
                            layer_types=_types(n, "ssf"), rope_parameters=rope, query_pre_attn_scalar=24,
                            tie_word_embeddings=True)


def _phi3(n):
    from transformers import Phi3Config
    return Phi3Config(**_COMMON, num_hidden_layers=n, sliding_window=SLIDING, original_max_position_embeddings=256,
                      tie_word_embeddings=False)


def _opt(n):
    from transformers import OPTConfig
    return OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=96, num_hidden_layers=n, num_attention_heads=4,
                     max_position_embeddings=256, word_embed_proj_dim=64, bos_token_id=1, eos_token_id=2,
                     pad_token_id=0, enable_bias=True)


_BUILDERS = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2,
             "gemma3": _gemma3, "phi3": _phi3, "opt": _opt}


def structured_config(family: str, layers: int = LAYERS):
    return _BUILDERS[family](layers)


def structured_model(family: str, layers: int = LAYERS, attn: str | None = None, seed: int = 0):
    """A random model of `family` in eval mode, float32, cache off by default; `attn`: the
    attention implementation (None: transformers' default for the family)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(structured_config(family, layers), dtype=torch.float32,
                                             **({"attn_implementation": attn} if attn else {}))
    with torch.no_grad():   # larger-than-default init so that a wrong mask or rotary visibly changes outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.eval()
    model.config.use_cache = False
    return model
