"""Configuration shipped inside prunekit outputs written in the Nemotron-NAS (DeciLM) layout.

The layout of NVIDIA's Puzzle models (Bercovich et al. 2024, arXiv 2411.19146): a Llama model
whose blocks each state their own shape in `block_configs`:

    attention: {"no_op": bool, "replace_with_linear": false, "n_heads_in_group": int | null}
    ffn:       {"no_op": bool, "ffn_mult": float (only when it gives the width exactly),
                "intermediate_size": int | null}

A block keeps every query head; its KV heads are num_attention_heads / n_heads_in_group.
Serving engines read the entries by attribute (`block.attention.no_op`) and test whether
`ffn_mult` exists before falling back to `intermediate_size`, so entries are dicts that also
answer attributes, and a key that is absent is absent for both.

Q/K/V biases are `qkv_bias`; the output projection's is `attention_bias` (Qwen2 has the first
and not the second).
"""
from __future__ import annotations

from transformers import LlamaConfig


class BlockEntry(dict):
    """A `block_configs` entry (or its attention/ffn part): a dict (so it is written as JSON)
    that also answers attribute access; a missing key raises AttributeError."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __reduce__(self):
        return (BlockEntry, (dict(self),))


def block_entry(block: dict) -> BlockEntry:
    return BlockEntry({k: BlockEntry(v) if isinstance(v, dict) else v for k, v in dict(block).items()})


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, qkv_bias=None, **kwargs):
        super().__init__(**kwargs)
        self.qkv_bias = self.attention_bias if qkv_bias is None else qkv_bias
        full = {"attention": {"no_op": False, "replace_with_linear": False,
                              "n_heads_in_group": self.num_attention_heads // self.num_key_value_heads},
                "ffn": {"no_op": False, "intermediate_size": self.intermediate_size}}
        self.block_configs = [block_entry(b) for b in (block_configs or [full] * self.num_hidden_layers)]
