"""Modeling code shipped inside width-pruned checkpoints written by prunekit.

A Llama-layout model whose blocks may each have their own MLP width and their own attention
head width. A pruned attention keeps, for every KV head, a set of rotary pairs (dims p and
p + head_dim/2 of the original head); `rope_index` stores those original dims so that each kept
pair keeps its original rotary frequency, and the softmax scale stays 1/sqrt(original head_dim):
the sliced model computes exactly what the masked dense model computed.

Load with AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import eager_attention_forward, rotate_half

try:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
except ImportError:  # older layouts
    from transformers.integrations import ALL_ATTENTION_FUNCTIONS


class PrunedLlamaConfig(LlamaConfig):
    model_type = "prunekit_llama"

    def __init__(self, layer_intermediate_sizes=None, layer_head_dims=None, attention_qkv_bias=None,
                 attention_o_bias=None, **kwargs):
        super().__init__(**kwargs)
        # Qwen2-style models have q/k/v biases but none on o_proj
        self.attention_qkv_bias = self.attention_bias if attention_qkv_bias is None else attention_qkv_bias
        self.attention_o_bias = self.attention_bias if attention_o_bias is None else attention_o_bias
        n = self.num_hidden_layers
        self.layer_intermediate_sizes = list(layer_intermediate_sizes or [self.intermediate_size] * n)
        full = getattr(self, "head_dim", None) or self.hidden_size // self.num_attention_heads
        self.layer_head_dims = list(layer_head_dims or [full] * n)


class PrunedLlamaAttention(nn.Module):
    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        full = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.head_dim = config.layer_head_dims[layer_idx]
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = full ** -0.5          # the original scale: kept logits are unchanged
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        bias, o_bias = config.attention_qkv_bias, config.attention_o_bias
        h, kv, d = config.num_attention_heads, config.num_key_value_heads, self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, h * d, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv * d, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv * d, bias=bias)
        self.o_proj = nn.Linear(h * d, config.hidden_size, bias=o_bias)
        # original dims kept by each KV head: its kept pairs' first halves, then their partners
        self.register_buffer("rope_index", torch.zeros(kv, d, dtype=torch.long))

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings                               # [B, T, original head_dim]
        cos_kv = cos[:, :, self.rope_index].permute(0, 2, 1, 3)      # [B, KV, T, d]
        sin_kv = sin[:, :, self.rope_index].permute(0, 2, 1, 3)
        cos_q = cos_kv.repeat_interleave(self.num_key_value_groups, dim=1)
        sin_q = sin_kv.repeat_interleave(self.num_key_value_groups, dim=1)
        q = q * cos_q + rotate_half(q) * sin_q
        k = k * cos_kv + rotate_half(k) * sin_kv
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward) \
            if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface") else \
            ALL_ATTENTION_FUNCTIONS.get(self.config._attn_implementation, eager_attention_forward)
        out, weights = interface(self, q, k, v, attention_mask,
                                 dropout=0.0 if not self.training else self.attention_dropout,
                                 scaling=self.scaling, **kwargs)
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
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
