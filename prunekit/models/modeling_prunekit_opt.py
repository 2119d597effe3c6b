"""Modeling code shipped inside width-pruned OPT checkpoints written by prunekit.

An OPT model whose blocks may each have their own FFN width and attention head width. The
attention keeps the original scale 1/sqrt(original head_dim), so the sliced model computes exactly
what the masked dense model computed. Attention stays transformers' own OPTAttention (only its
head width and projections change), so it follows the installed release's calling convention
(the KV cache keyword included). Load with trust_remote_code=True.
"""
from __future__ import annotations

import torch.nn as nn
from transformers import OPTConfig, OPTForCausalLM


class PrunedOPTConfig(OPTConfig):
    model_type = "prunekit_opt"

    def __init__(self, layer_ffn_dims=None, layer_head_dims=None, **kwargs):
        super().__init__(**kwargs)
        n = self.num_hidden_layers
        self.layer_ffn_dims = list(layer_ffn_dims or [self.ffn_dim] * n)
        self.layer_head_dims = list(layer_head_dims or [self.hidden_size // self.num_attention_heads] * n)


class PrunedOPTForCausalLM(OPTForCausalLM):
    config_class = PrunedOPTConfig

    def __init__(self, config: PrunedOPTConfig):
        super().__init__(config)
        hidden, heads, bias = config.hidden_size, config.num_attention_heads, config.enable_bias
        for i, layer in enumerate(self.model.decoder.layers):
            d = config.layer_head_dims[i]
            if d != hidden // heads:
                attn = layer.self_attn
                attn.head_dim = d            # attn.scaling keeps the original head_dim's value
                attn.q_proj = nn.Linear(hidden, heads * d, bias=bias)
                attn.k_proj = nn.Linear(hidden, heads * d, bias=bias)
                attn.v_proj = nn.Linear(hidden, heads * d, bias=bias)
                attn.out_proj = nn.Linear(heads * d, hidden, bias=bias)
            f = config.layer_ffn_dims[i]
            if f != config.ffn_dim:
                layer.fc1 = nn.Linear(hidden, f, bias=bias)
                layer.fc2 = nn.Linear(f, hidden, bias=bias)
        self.post_init()
