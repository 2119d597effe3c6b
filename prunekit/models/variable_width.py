"""Empty models of a family with per-block widths, for width-pruned weights to be loaded into.

One MLP width everywhere and untouched attention give the family's own standard class;
otherwise the family's variable-width modeling code (`modeling_prunekit_<name>.py`), which is
registered for the auto classes so that `save_pretrained` writes that file next to the weights
and `from_pretrained(..., trust_remote_code=True)` loads it anywhere."""
from __future__ import annotations

import torch.nn as nn

from ..errors import PrunekitError
from . import decilm
from .adapter import ModelAdapter

# config lists with one entry per block (a depth change must keep the kept blocks' entries)
PER_LAYER_KEYS = ("layer_types", "layer_intermediate_sizes", "layer_head_dims", "layer_ffn_dims", "block_configs")
# config keys that describe the dense model or its saved form, not the new one (the attention
# biases of a variable-width input are read from its first block again)
_DROP_KEYS = ("architectures", "auto_map", "model_type", "transformers_version", *PER_LAYER_KEYS, "dtype",
              "torch_dtype", "attention_qkv_bias", "attention_o_bias")


def keep_layers(config, kept_from: list[int]) -> None:
    """Make `config` describe the blocks `kept_from` (original indices, bottom to top): the depth
    and every per-block list. The one place a smaller model's config is rewritten, for the
    in-memory and the streamed path alike."""
    for key in PER_LAYER_KEYS:
        values = getattr(config, key, None)
        if values is not None:
            setattr(config, key, [values[i] for i in kept_from])
    config.num_hidden_layers = len(kept_from)


def _variable_classes(kind: str):
    if kind == "llama":
        from .modeling_prunekit_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM
        return PrunedLlamaConfig, PrunedLlamaForCausalLM
    if kind == "opt":
        from .modeling_prunekit_opt import PrunedOPTConfig, PrunedOPTForCausalLM
        return PrunedOPTConfig, PrunedOPTForCausalLM
    raise PrunekitError(f"no variable-width modeling code for {kind} models")


def empty_model(adapter: ModelAdapter, depth: int, mlp_widths: list[int], head_dims: list[int],
                kv_heads: list[int] | None = None) -> nn.Module:
    """An untrained model like `adapter.model` with `depth` blocks of the given MLP widths,
    attention head dims and KV heads (same dtype): the family's standard class when the blocks
    are alike, the Nemotron-NAS (DeciLM) layout when only their KV heads and MLP widths differ
    and the layout can state the model, otherwise prunekit's own variable-width code."""
    from transformers import AutoModelForCausalLM

    model = adapter.model
    kv_heads = kv_heads or [adapter.dim("kv_heads")] * depth
    full_heads = all(d == adapter.dim("head_dim") for d in head_dims)
    alike = len(set(mlp_widths)) == 1 and len(set(kv_heads)) == 1 and kv_heads[0] == adapter.dim("kv_heads")
    if full_heads and not alike and decilm.why_not(adapter) is None and not adapter.spec.fused:
        return decilm.empty_decilm(adapter, [decilm.BlockShape(k, w) for k, w in zip(kv_heads, mlp_widths)])
    if any(k != adapter.dim("kv_heads") for k in kv_heads):
        decilm.require(adapter, "fewer KV heads")
    dtype = next(model.parameters()).dtype
    base = model.config.to_dict()
    for k in _DROP_KEYS:
        base.pop(k, None)
    base["num_hidden_layers"] = depth
    if getattr(model.config, "layer_types", None):    # the kept (leading) blocks keep their kinds
        base["layer_types"] = adapter.layer_types[:depth]
    mlp_key = adapter.spec.dims["mlp"]
    # a variable-width input keeps its modeling code; a family with fused projections always gets
    # the variable-width code, which keeps them apart
    variable_input = any(hasattr(model.config, k) for k in PER_LAYER_KEYS[1:4])
    if (not variable_input and not adapter.spec.fused and all(d == adapter.dim("head_dim") for d in head_dims)
            and len(set(mlp_widths)) == 1):
        cfg = type(model.config)(**{**base, mlp_key: mlp_widths[0]})
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    config_cls, model_cls = _variable_classes(adapter.spec.variable_width)
    first = adapter.layers[0]
    if adapter.spec.variable_width == "opt":
        cfg = config_cls(**base, layer_ffn_dims=mlp_widths, layer_head_dims=head_dims)
    else:
        for key in ("attention_bias", "attention_qkv_bias", "attention_o_bias"):
            base.pop(key, None)
        qk_norm = bool(adapter.spec.qk_norms) or bool(base.pop("qk_norm", False))   # a sliced Qwen3 input keeps it
        base["layer_types"] = adapter.layer_types[:depth]
        cfg = config_cls(**base, layer_intermediate_sizes=mlp_widths, layer_head_dims=head_dims, qk_norm=qk_norm,
                         attention_qkv_bias=adapter.role(first, "q").bias is not None,
                         attention_o_bias=adapter.role(first, "o").bias is not None)
    small = model_cls(cfg).to(dtype)
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class("AutoModelForCausalLM")
    return small
