"""Modeling code shipped inside prunekit outputs written in the Nemotron-NAS (DeciLM) layout.

A Llama model whose blocks each have their own shape (configuration_decilm.py): attention with
its own number of KV heads, or none; an MLP of its own width, or none. A block without
attention has no input norm and no attention weights, and the residual passes through; one
without an MLP has no post-attention norm and no MLP weights. Serving engines (vLLM's
DeciLMForCausalLM, llama.cpp's DECI architecture) read the same layout with their own code.

The KV cache has one slot per block that keeps attention, numbered bottom to top, so the
cache's length is read from a block that has one. Slots are renumbered at every forward, so
they stay right whatever was done to the block list.

Load with AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).
"""
from __future__ import annotations

import torch.nn as nn
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaModel, LlamaRMSNorm

from .configuration_decilm import DeciLMConfig


def ffn_width(config: DeciLMConfig, ffn) -> int:
    """A block's MLP width as the engines derive it: from `ffn_mult` when the entry has one
    (int(2·m·hidden/3) rounded up to a multiple of 256), otherwise `intermediate_size`."""
    if "ffn_mult" in ffn:
        width = int(2 * ffn["ffn_mult"] * config.hidden_size / 3)
        return -(-width // 256) * 256
    return ffn["intermediate_size"]


class DeciLMAttention(LlamaAttention):
    """Llama attention with this block's KV heads and the layout's bias keys."""

    def __init__(self, config: DeciLMConfig, slot: int, n_heads_in_group: int):
        super().__init__(config, slot)
        heads, d = config.num_attention_heads, self.head_dim
        kv = heads // n_heads_in_group
        self.num_key_value_groups = n_heads_in_group
        self.q_proj = nn.Linear(config.hidden_size, heads * d, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv * d, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv * d, bias=config.qkv_bias)
        self.o_proj = nn.Linear(heads * d, config.hidden_size, bias=config.attention_bias)


class DeciLMDecoderLayer(nn.Module):
    def __init__(self, config: DeciLMConfig, index: int, slot: int):
        super().__init__()
        block = config.block_configs[index]
        if not block["attention"]["no_op"]:
            self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.self_attn = DeciLMAttention(config, slot, block["attention"]["n_heads_in_group"])
        else:
            self.self_attn = None
        if not block["ffn"]["no_op"]:
            self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.mlp = LlamaMLP(config)
            width = ffn_width(config, block["ffn"])
            if width != config.intermediate_size:
                self.mlp.gate_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
                self.mlp.up_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
                self.mlp.down_proj = nn.Linear(width, config.hidden_size, bias=config.mlp_bias)
                self.mlp.intermediate_size = width
        else:
            self.mlp = None

    def forward(self, hidden_states, *args, **kwargs):
        if self.self_attn is not None:
            out, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
            hidden_states = hidden_states + out
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


def number_cache_slots(layers) -> int:
    """Give the attention of every block that has one its KV-cache slot (0, 1, ... bottom to top)."""
    slot = 0
    for layer in layers:
        attention = getattr(layer, "self_attn", None)
        if attention is not None:
            attention.layer_idx = slot
            slot += 1
    return slot


class DeciLMModel(LlamaModel):
    config_class = DeciLMConfig

    def __init__(self, config: DeciLMConfig):
        super().__init__(config)
        slots, layers = 0, []
        for i in range(config.num_hidden_layers):
            layers.append(DeciLMDecoderLayer(config, i, slots))
            slots += 0 if layers[-1].self_attn is None else 1
        self.layers = nn.ModuleList(layers)

    def forward(self, *args, **kwargs):
        if number_cache_slots(self.layers[: self.config.num_hidden_layers]) == 0 and kwargs.get("use_cache"):
            kwargs["use_cache"] = False       # no block keeps attention: nothing to cache
        return super().forward(*args, **kwargs)


class DeciLMForCausalLM(LlamaForCausalLM):
    config_class = DeciLMConfig

    def __init__(self, config: DeciLMConfig):
        super().__init__(config)
        self.model = DeciLMModel(config)
        self.post_init()
