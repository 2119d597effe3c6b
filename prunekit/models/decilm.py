"""Models in the Nemotron-NAS (DeciLM) layout, built from a Llama-family model and one shape per
block (configuration_decilm.py says what the layout holds). The layout is what serving engines
load with their own classes, so prunekit writes it whenever the blocks of a Llama-family output
differ in ways it can state: a sublayer removed, fewer KV heads, an MLP of its own width.
Within-head pruning, sliding windows, per-head q/k norms and the other families cannot be
stated in it and keep prunekit's own layout (variable_width.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import PrunekitError
from .adapter import ModelAdapter
from .plumbing import finish_smaller

MODEL_TYPE = "nemotron-nas"
FFN_GRID = 256          # the engines' rounding of ffn_mult widths
# config keys that describe the dense model's form, not the new one's
_DROP_KEYS = ("architectures", "auto_map", "model_type", "transformers_version", "dtype", "torch_dtype",
              "layer_types", "sliding_window", "use_sliding_window", "max_window_layers", "block_configs",
              "qkv_bias", "attention_bias", "layer_intermediate_sizes", "layer_head_dims", "attention_qkv_bias",
              "attention_o_bias", "qk_norm")


@dataclass(frozen=True)
class BlockShape:
    kv_heads: int       # KV heads of the block's attention, 0: no attention
    mlp: int            # the MLP's width, 0: no MLP

    @property
    def empty(self) -> bool:
        return self.kv_heads == 0 and self.mlp == 0


def why_not(adapter: ModelAdapter) -> str | None:
    """Why this model's blocks cannot be stated in the layout, or None when they can."""
    spec = adapter.spec
    if spec.name != "llama" or spec.fused or spec.qk_norms:
        return f"{adapter.config.model_type} models are not Llama-layout blocks"
    if getattr(adapter.config, "qk_norm", False):       # a width-pruned Qwen3 in prunekit's layout
        return "per-head q/k norms"
    if any(t != "full_attention" for t in adapter.layer_types):
        return "sliding-window attention"
    if getattr(adapter.config, "layer_head_dims", None) and any(
            d != adapter.dim("head_dim") for d in adapter.config.layer_head_dims):
        return "within-head pruned attention (per-block head dims)"
    return None


def require(adapter: ModelAdapter, what: str) -> None:
    reason = why_not(adapter)
    if reason is not None:
        raise PrunekitError(f"{what} needs the Nemotron-NAS (DeciLM) layout, which cannot state this model: {reason}")


def ffn_entry(width: int, hidden: int) -> dict:
    """An ffn entry both engines read exactly: `ffn_mult` where its rounding gives the width
    (llama.cpp's converter reads nothing else), `intermediate_size` always (vLLM's fallback)."""
    if width == 0:
        return {"no_op": True, "ffn_mult": None, "intermediate_size": None}
    entry = {"no_op": False, "intermediate_size": width}
    mult = 3 * width / (2 * hidden)
    if width % FFN_GRID == 0 and -(-int(2 * mult * hidden / 3) // FFN_GRID) * FFN_GRID == width:
        entry["ffn_mult"] = mult
    return entry


def block_configs(shapes: list[BlockShape], heads: int, hidden: int) -> list[dict]:
    return [{"attention": {"no_op": s.kv_heads == 0, "replace_with_linear": False,
                           "n_heads_in_group": heads // s.kv_heads if s.kv_heads else None},
             "ffn": ffn_entry(s.mlp, hidden)} for s in shapes]


def shapes_of(adapter: ModelAdapter) -> list[BlockShape]:
    """Each block's shape, read from its modules."""
    hd = adapter.dim("head_dim")
    out = []
    for block in adapter.layers:
        k, down = adapter.role(block, "k"), adapter.role(block, "down")
        out.append(BlockShape(0 if k is None else k.out_features // hd, 0 if down is None else down.in_features))
    return out


def check_shapes(adapter: ModelAdapter, shapes: list[BlockShape]) -> None:
    heads = adapter.dim("heads")
    for i, s in enumerate(shapes):
        if s.empty:
            raise PrunekitError(f"block {i} keeps neither attention nor MLP: remove the block instead")
        if s.kv_heads and heads % s.kv_heads:
            raise PrunekitError(f"block {i}: {s.kv_heads} KV heads do not divide {heads} query heads")


def decilm_config(adapter: ModelAdapter, shapes: list[BlockShape]):
    """The DeciLM config of a model like `adapter.model` with these block shapes (the model may
    be on the meta device: only its config and block modules are read)."""
    from .configuration_decilm import DeciLMConfig

    require(adapter, "a per-block shape")
    check_shapes(adapter, shapes)
    base = {k: v for k, v in adapter.config.to_dict().items() if k not in _DROP_KEYS}
    first = next(b for b in adapter.layers if adapter.role(b, "q") is not None)
    full_mlp = max(s.mlp for s in shapes)
    return DeciLMConfig(**{**base, "num_hidden_layers": len(shapes),
                           "intermediate_size": full_mlp or base.get("intermediate_size")},
                        block_configs=block_configs(shapes, adapter.dim("heads"), adapter.dim("hidden")),
                        qkv_bias=adapter.role(first, "q").bias is not None,
                        attention_bias=adapter.role(first, "o").bias is not None,
                        architectures=["DeciLMForCausalLM"])


def empty_decilm(adapter: ModelAdapter, shapes: list[BlockShape]) -> nn.Module:
    """An untrained DeciLM model like `adapter.model` (same dtype) with these block shapes."""
    from .configuration_decilm import DeciLMConfig
    from .modeling_decilm import DeciLMForCausalLM

    small = DeciLMForCausalLM(decilm_config(adapter, shapes)).to(next(adapter.model.parameters()).dtype)
    DeciLMConfig.register_for_auto_class()
    DeciLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    return small


def save_config(config, folder) -> None:
    """Write a DeciLM config with the shipped code it names (for outputs written without a model
    object: streaming)."""
    import shutil
    from pathlib import Path

    config.auto_map = {"AutoConfig": "configuration_decilm.DeciLMConfig",
                       "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"}
    config.save_pretrained(folder)
    for name in ("configuration_decilm.py", "modeling_decilm.py"):
        shutil.copy(Path(__file__).with_name(name), Path(folder) / name)


def block_shape(adapter: ModelAdapter, block: nn.Module, parts) -> BlockShape:
    """The shape of `block` keeping only the sublayers in `parts`."""
    return BlockShape(adapter.role(block, "k").out_features // adapter.dim("head_dim") if "attention" in parts else 0,
                      adapter.role(block, "down").in_features if "mlp" in parts else 0)


def to_decilm(adapter: ModelAdapter, blocks: list[nn.Module], shapes: list[BlockShape]) -> nn.Module:
    """A DeciLM model whose blocks are `blocks` (modules of `adapter.model`) cut to `shapes`: a
    part a shape drops is left out, every other weight is copied as it is."""
    return from_block_states(adapter, [b.state_dict() for b in blocks], shapes)


def from_block_states(adapter: ModelAdapter, states: list[dict], shapes: list[BlockShape]) -> nn.Module:
    """A DeciLM model from each block's state (block-relative keys, at the block's own shapes)
    and the rest of `adapter.model`."""
    model = adapter.model
    small = empty_decilm(adapter, shapes)
    prefix = adapter.spec.layers_path + "."
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    for new, block_state in enumerate(states):
        for k, v in block_state.items():
            state[f"{prefix}{new}.{k}"] = v
    target = small.state_dict()
    state = {k: v for k, v in state.items() if k in target}
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in state
               and not (k.endswith("lm_head.weight") and model.config.tie_word_embeddings)]
    if missing or wrong:
        raise PrunekitError(f"the DeciLM layout left weights unmatched: missing {missing[:3]}, "
                            f"other shapes {wrong[:3]}")
    small.load_state_dict(state, strict=False)
    return finish_smaller(small, model)


def llamacpp_shapes(adapter: ModelAdapter) -> tuple[list[BlockShape], list[str]]:
    """The block shapes a llama.cpp-bound copy needs, and what changes: MLP widths padded up to the
    256 grid, a zero MLP of 256 channels for a block that keeps attention alone (llama.cpp's DECI
    graph skips a block without an MLP), a zero attention with one KV head in block 0 when it has
    none (llama.cpp reads the head size there)."""
    heads = adapter.dim("heads")
    shapes, changes = [], []
    for i, s in enumerate(shapes_of(adapter)):
        kv, mlp = s.kv_heads, s.mlp
        if mlp % FFN_GRID:
            changes.append(f"block {i}: MLP {mlp} -> {mlp + FFN_GRID - mlp % FFN_GRID} (zero channels)")
            mlp += FFN_GRID - mlp % FFN_GRID
        if kv and not mlp:
            changes.append(f"block {i}: a zero MLP of {FFN_GRID} channels beside its attention")
            mlp = FFN_GRID
        if i == 0 and not kv:
            changes.append(f"block 0: a zero attention with one KV head ({heads} query heads)")
            kv = 1
        shapes.append(BlockShape(kv, mlp))
    return shapes, changes


def padded(adapter: ModelAdapter, shapes: list[BlockShape]) -> nn.Module:
    """A copy of a DeciLM model with `shapes` (each at least as large as the block's own), the new
    channels and parts zero: gated MLP channels whose gate and up rows and down column are zero
    output zero, an attention whose projections are zero outputs zero, so the function is the
    same. New norms are ones (their outputs meet zero weights)."""
    small = empty_decilm(adapter, shapes)
    target = small.state_dict()
    source = adapter.model.state_dict()
    state = {}
    for key, value in target.items():
        old = source.get(key)
        if old is None:
            state[key] = torch.ones_like(value) if key.endswith("layernorm.weight") else torch.zeros_like(value)
            continue
        new = torch.zeros_like(value)
        new[tuple(slice(0, n) for n in old.shape)] = old
        state[key] = new
    small.load_state_dict(state)
    return finish_smaller(small, adapter.model)
