"""Where an architecture keeps its decoder blocks, norms and linears.

The one place that knows module names. Methods and the engine ask the adapter; they never
spell `model.model.layers` or `mlp.down_proj` themselves. Only the listed model types are
accepted (a Llama-like module layout alone is not enough); their specs are matched by structure.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..errors import PrunekitError

SUPPORTED_ARCHITECTURES = (
    "llama-like (Llama, Mistral, Qwen2, Qwen3)",
    "opt",
)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    layers_path: str            # attribute path from the CausalLM to the ModuleList of blocks
    pre_block_paths: tuple      # modules run before block 0 (embeddings, rotary, positions)
    post_block_paths: tuple     # modules run after the last block (final norm, projection, head)
    attn_in: tuple              # linears that read the attention input
    attn_out: tuple             # linear that writes the attention output
    mlp_in: tuple               # linears that read the MLP input
    mlp_out: tuple              # linear that writes the MLP output
    norms: tuple                # per-block norm modules


LLAMA = FamilySpec(
    name="llama",
    layers_path="model.layers",
    pre_block_paths=("model.embed_tokens", "model.rotary_emb"),
    post_block_paths=("model.norm", "lm_head"),
    attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out=("self_attn.o_proj",),
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out=("mlp.down_proj",),
    norms=("input_layernorm", "post_attention_layernorm"),
)

OPT = FamilySpec(
    name="opt",
    layers_path="model.decoder.layers",
    pre_block_paths=("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in"),
    post_block_paths=("model.decoder.final_layer_norm", "model.decoder.project_out", "lm_head"),
    attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attn_out=("self_attn.out_proj",),
    mlp_in=("fc1",),
    mlp_out=("fc2",),
    norms=("self_attn_layer_norm", "final_layer_norm"),
)

FAMILIES = (LLAMA, OPT)

# model_type values whose layout the specs above describe exactly (prunekit_* are width outputs).
# Checked before the module names: Gemma 2/3 have Llama-like names but other norms and embeddings.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "opt", "prunekit_llama", "prunekit_opt")


def get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _matches(model: nn.Module, spec: FamilySpec) -> bool:
    layers = get_path(model, spec.layers_path)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    block = layers[0]
    names = spec.attn_in + spec.attn_out + spec.mlp_in + spec.mlp_out
    return all(isinstance(get_path(block, n), nn.Linear) for n in names)


class ModelAdapter:
    """Structural view of a supported causal LM."""

    def __init__(self, model: nn.Module):
        self.model = model
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise PrunekitError(f"unsupported model_type {model_type}: prunekit supports "
                                + ", ".join(SUPPORTED_MODEL_TYPES))
        for spec in FAMILIES:
            if _matches(model, spec):
                self.spec = spec
                break
        else:
            arch = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
            raise PrunekitError(
                f"unsupported architecture {arch[0]}: prunekit supports "
                + "; ".join(SUPPORTED_ARCHITECTURES)
            )

    @property
    def family(self) -> str:
        return self.spec.name

    @property
    def layers(self) -> nn.ModuleList:
        return get_path(self.model, self.spec.layers_path)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def decoder(self) -> nn.Module:
        """The module whose forward runs the blocks (LlamaModel, OPTDecoder)."""
        return get_path(self.model, self.spec.layers_path.rsplit(".", 1)[0])

    def pre_block_modules(self) -> list[nn.Module]:
        mods = (get_path(self.model, p) for p in self.spec.pre_block_paths)
        return [m for m in mods if m is not None]

    def post_block_modules(self) -> list[nn.Module]:
        mods = (get_path(self.model, p) for p in self.spec.post_block_paths)
        return [m for m in mods if m is not None]

    def final_modules(self) -> list[nn.Module]:
        """The post-block modules except the LM head: what turns the last block's output into
        the final hidden state (HF's hidden_states[-1], after the final norm)."""
        head = get_path(self.model, self.spec.post_block_paths[-1])
        return [m for m in self.post_block_modules() if m is not head]

    def linear_names(self) -> tuple:
        s = self.spec
        return s.attn_in + s.attn_out + s.mlp_in + s.mlp_out

    def block_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """The prunable linears of one block, in forward order, by their name inside the block."""
        return {name: get_path(block, name) for name in self.linear_names()}

    def all_linears(self, blocks=None):
        """(qualified name, linear) for every prunable linear of every block (or of `blocks`)."""
        for i, block in enumerate(self.layers):
            if blocks is not None and i not in blocks:
                continue
            for name, lin in self.block_linears(block).items():
                yield f"layers.{i}.{name}", lin
