"""Modeling code shipped inside width-pruned checkpoints written by prunekit.

A Llama-layout model whose blocks may each have their own MLP width and their own attention
head width. A pruned attention keeps, for every KV head, a set of rotary pairs (dims p and
p + head_dim/2 of the original head); `rope_index` stores those original dims so that each kept
pair keeps its original rotary frequency, and the softmax scale stays 1/sqrt(original head_dim):
the sliced model computes exactly what the masked dense model computed. Per-head q/k norms
(Qwen3) keep the original head's weight and normalise by the original head dim, gathered per KV
head like the rotary frequencies (the masked dense model's removed dims are zeros that still
count in the RMS). Sliding-window layers (`layer_types`, `sliding_window`: Mistral, Qwen2, Qwen3)
get their own mask from the decoder's forward, which is transformers' Qwen2 decoder forward
(the one that builds a mask per layer type). The attention is
transformers' LlamaAttention with only that rotary gather overridden; its forward takes the KV
cache under whichever keyword the installed transformers passes it (see CACHE_KEYWORDS).

Load with AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaModel, eager_attention_forward, rotate_half
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Keywords transformers 5 passes the KV cache to attention under: `past_key_values` (5.0-5.23),
# `cache` (5.24 on). A cache under a keyword missing here is never dropped silently: take_cache
# raises instead.
CACHE_KEYWORDS = ("cache", "past_key_values")


def take_cache(cache, kwargs: dict):
    """The KV cache, under whichever keyword the caller used (removed from kwargs)."""
    given = [] if cache is None else [cache]
    for name in CACHE_KEYWORDS[1:]:
        value = kwargs.pop(name, None)
        if value is not None:
            given.append(value)
    stray = sorted(name for name, value in kwargs.items() if isinstance(value, Cache))
    if stray:
        raise TypeError(f"prunekit attention got a KV cache under an unknown keyword {stray}: "
                        f"this transformers release needs a newer prunekit")
    if any(c is not given[0] for c in given[1:]):
        raise TypeError("prunekit attention got two different KV caches")
    return given[0] if given else None


class PrunedLlamaConfig(LlamaConfig):
    model_type = "prunekit_llama"

    def __init__(self, layer_intermediate_sizes=None, layer_head_dims=None, attention_qkv_bias=None,
                 attention_o_bias=None, qk_norm=False, sliding_window=None, layer_types=None, **kwargs):
        super().__init__(**kwargs)
        self.qk_norm = qk_norm
        self.sliding_window = sliding_window
        # Qwen2-style models have q/k/v biases but none on o_proj
        self.attention_qkv_bias = self.attention_bias if attention_qkv_bias is None else attention_qkv_bias
        self.attention_o_bias = self.attention_bias if attention_o_bias is None else attention_o_bias
        n = self.num_hidden_layers
        self.layer_intermediate_sizes = list(layer_intermediate_sizes or [self.intermediate_size] * n)
        full = getattr(self, "head_dim", None) or self.hidden_size // self.num_attention_heads
        self.layer_head_dims = list(layer_head_dims or [full] * n)
        # a window without per-layer types applies to every layer (Mistral's convention)
        kind = "sliding_attention" if sliding_window else "full_attention"
        self.layer_types = list(layer_types or [kind] * n)


class HeadNorm(nn.Module):
    """RMSNorm over one attention head of the original width, applied to the dims a pruned head
    kept: x * rsqrt(sum(x^2) / original_dim + eps) * weight[kept dims] (float32 inside, like
    transformers' RMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x: [B, heads, T, d]; index: [heads, d], the original dims each head kept."""
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) / self.weight.shape[0] + self.eps)
        return self.weight[index][None, :, None, :] * x32.to(dtype)


class PrunedLlamaAttention(LlamaAttention):
    """transformers' LlamaAttention with this layer's head width, the kept dims' original rotary
    frequencies (`rope_index`) and the original softmax scale."""

    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        super().__init__(config, layer_idx)   # self.scaling: 1/sqrt(original head_dim), kept as is
        self.head_dim = d = config.layer_head_dims[layer_idx]
        h, kv = config.num_attention_heads, config.num_key_value_heads
        bias, o_bias = config.attention_qkv_bias, config.attention_o_bias
        self.q_proj = nn.Linear(config.hidden_size, h * d, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv * d, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv * d, bias=bias)
        self.o_proj = nn.Linear(h * d, config.hidden_size, bias=o_bias)
        # original dims kept by each KV head: its kept pairs' first halves, then their partners
        self.register_buffer("rope_index", torch.zeros(kv, d, dtype=torch.long))
        self.sliding_window = config.sliding_window if config.layer_types[layer_idx] == "sliding_attention" else None
        if config.qk_norm:
            full = getattr(config, "head_dim", None) or config.hidden_size // h
            self.q_norm = HeadNorm(full, config.rms_norm_eps)
            self.k_norm = HeadNorm(full, config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        cache = take_cache(cache, kwargs)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if self.config.qk_norm:
            q = self.q_norm(q, self.rope_index.repeat_interleave(self.num_key_value_groups, dim=0))
            k = self.k_norm(k, self.rope_index)
        q, k = self.apply_rope(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward) \
            if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface") else \
            ALL_ATTENTION_FUNCTIONS.get(self.config._attn_implementation, eager_attention_forward)
        out, weights = interface(self, q, k, v, attention_mask,
                                 dropout=0.0 if not self.training else self.attention_dropout,
                                 scaling=self.scaling, sliding_window=self.sliding_window, **kwargs)
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights

    def apply_rope(self, q, k, cos, sin):
        """Rotate every kept pair by its original frequency; KV heads keep different pairs, so
        cos/sin ([B, T, original head_dim]) are gathered per KV head."""
        cos_kv = cos[:, :, self.rope_index].permute(0, 2, 1, 3)      # [B, KV, T, d]
        sin_kv = sin[:, :, self.rope_index].permute(0, 2, 1, 3)
        cos_q = cos_kv.repeat_interleave(self.num_key_value_groups, dim=1)
        sin_q = sin_kv.repeat_interleave(self.num_key_value_groups, dim=1)
        return q * cos_q + rotate_half(q) * sin_q, k * cos_kv + rotate_half(k) * sin_kv


class PrunedLlamaModel(LlamaModel):
    """Llama's decoder with transformers' Qwen2 forward: one mask per layer type, each layer
    given its own (LlamaModel's forward gives every layer the full causal mask)."""
    forward = Qwen2Model.forward

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
        self.has_sliding_layers = "sliding_attention" in config.layer_types


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
        self.model = PrunedLlamaModel(config)
        for i, layer in enumerate(self.model.layers):
            width = config.layer_intermediate_sizes[i]
            if width != config.intermediate_size:
                mlp = layer.mlp
                mlp.intermediate_size = width
                mlp.gate_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
                mlp.up_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
                mlp.down_proj = nn.Linear(width, config.hidden_size, bias=config.mlp_bias)
            # every layer gets the pruned attention (full layers keep every dim), so the bias
            # layout and the state-dict keys are the same in all layers
            layer.self_attn = PrunedLlamaAttention(config, i)
        self.post_init()
