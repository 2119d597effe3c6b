"""From a genome to weights: which rows and columns each block keeps, the masked dense model
used for fitness and reformation, and the physically smaller model that is saved."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import ModelAdapter, get_path
from .genome import Genome, Shape


def shape_of(adapter: ModelAdapter) -> Shape:
    cfg = adapter.model.config
    if getattr(cfg, "model_type", None) not in ("llama", "mistral", "qwen2", "opt"):
        raise PrunekitError(f"width search supports Llama, Mistral, Qwen2 and OPT checkpoints so far, not "
                            f"{cfg.model_type} (its norms, embeddings or attention differ from the shipped modeling code)")
    if getattr(cfg, "sliding_window", None):
        raise PrunekitError("width search does not support sliding-window attention yet")
    block = adapter.layers[0]
    if hasattr(block.self_attn, "q_norm"):
        raise PrunekitError("width search cannot slice heads under per-head q/k norms (Qwen3)")
    heads = cfg.num_attention_heads
    if adapter.family == "opt":
        return Shape(adapter.num_layers, cfg.hidden_size, heads, heads, cfg.hidden_size // heads, cfg.ffn_dim,
                     rotary=False, mlp_matrices=2)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return Shape(adapter.num_layers, cfg.hidden_size, heads, cfg.num_key_value_heads, head_dim,
                 cfg.intermediate_size)


def rope_index(genome: Genome, b: int, shape: Shape) -> torch.Tensor:
    """[kv_heads, kept dims]: original dims kept by each KV head (with rotary pairs: the first
    halves, then their partners, which is the layout rotate-half expects)."""
    rows = []
    for g in range(shape.kv_heads):
        units = torch.nonzero(genome.attn[b][g]).flatten()
        rows.append(torch.cat([units, units + shape.pairs]) if shape.rotary else units)
    return torch.stack(rows)


def block_channels(genome: Genome, b: int, shape: Shape) -> dict:
    """Kept output rows of q, k/v and kept intermediate channels (also the consumers' columns)."""
    idx = rope_index(genome, b, shape)
    group = shape.heads // shape.kv_heads
    q = torch.cat([h * shape.head_dim + idx[h // group] for h in range(shape.heads)])
    kv = torch.cat([g * shape.head_dim + idx[g] for g in range(shape.kv_heads)])
    return {"q": q, "kv": kv, "mlp": torch.nonzero(genome.mlp[b]).flatten(), "rope": idx}


class DenseWeights:
    """A copy of the dense block projections, to write masked versions of them into the model."""

    def __init__(self, adapter: ModelAdapter):
        self.adapter = adapter
        self.weights = [{n: (lin.weight.detach().clone(), None if lin.bias is None else lin.bias.detach().clone())
                         for n, lin in adapter.block_linears(b).items()} for b in adapter.layers]
        self.layers = list(adapter.layers)

    @torch.no_grad()
    def apply(self, genome: Genome, shape: Shape) -> None:
        """Write the genome's masked weights (zeros for removed rows and columns) and keep only
        the first `depth` blocks in the decoder."""
        spec = self.adapter.spec
        for b in range(genome.depth):
            block, dense = self.layers[b], self.weights[b]
            ch = block_channels(genome, b, shape)
            lins = self.adapter.block_linears(block)
            for name, lin in lins.items():
                _copy(lin, dense[name])
            _keep_rows(lins[spec.attn_in[0]], ch["q"])
            for name in spec.attn_in[1:]:
                _keep_rows(lins[name], ch["kv"])
            _keep_cols(lins[spec.attn_out[0]], ch["q"])
            for name in spec.mlp_in:
                _keep_rows(lins[name], ch["mlp"])
            _keep_cols(lins[spec.mlp_out[0]], ch["mlp"])
        self.set_depth(genome.depth)

    def set_depth(self, depth: int) -> None:
        layers = self.adapter.layers
        while len(layers):
            del layers[len(layers) - 1]
        for block in self.layers[:depth]:
            layers.append(block)

    def restore(self) -> None:
        with torch.no_grad():
            for block, dense in zip(self.layers, self.weights):
                for name, lin in self.adapter.block_linears(block).items():
                    _copy(lin, dense[name])
        self.set_depth(len(self.layers))


def _copy(lin: nn.Linear, dense: tuple) -> None:
    lin.weight.copy_(dense[0])
    if dense[1] is not None:
        lin.bias.copy_(dense[1])


def _keep_rows(lin: nn.Linear, keep: torch.Tensor) -> None:
    """Zero the removed output rows, biases included (a bias left on a removed q/k row would
    still add to the attention logits)."""
    mask = torch.ones(lin.out_features, dtype=torch.bool)
    mask[keep] = False
    lin.weight[mask] = 0
    if lin.bias is not None:
        lin.bias[mask] = 0


def _keep_cols(lin: nn.Linear, keep: torch.Tensor) -> None:
    mask = torch.ones(lin.in_features, dtype=torch.bool)
    mask[keep] = False
    lin.weight[:, mask] = 0


@torch.no_grad()
def sliced_model(model, genome: Genome, shape: Shape):
    """The physically smaller model computing what the masked model computes. A standard config
    when attention is untouched and every MLP has one width; otherwise prunekit's small modeling
    code (per-block widths, original rotary frequencies and softmax scale)."""
    from transformers import AutoModelForCausalLM

    adapter = ModelAdapter(model)
    spec = adapter.spec
    depth = genome.depth
    widths = [int(genome.mlp[b].sum()) for b in range(depth)]
    dims = [shape.unit_dims(genome.pairs_kept(b)) for b in range(depth)]
    base = model.config.to_dict()
    for k in ("architectures", "auto_map", "model_type", "transformers_version", "layer_types",
              "layer_intermediate_sizes", "layer_head_dims", "dtype", "torch_dtype"):
        base.pop(k, None)
    base["num_hidden_layers"] = depth
    standard = all(d == shape.head_dim for d in dims) and len(set(widths)) == 1
    first = adapter.layers[0]
    qkv_bias = get_path(first, spec.attn_in[0]).bias is not None
    o_bias = get_path(first, spec.attn_out[0]).bias is not None
    width_key = "ffn_dim" if adapter.family == "opt" else "intermediate_size"
    if standard:
        cfg = type(model.config)(**{**base, width_key: widths[0]})
        small = AutoModelForCausalLM.from_config(cfg, dtype=next(model.parameters()).dtype)
    elif adapter.family == "opt":
        from ...export.modeling_prunekit_opt import PrunedOPTConfig, PrunedOPTForCausalLM
        cfg = PrunedOPTConfig(**base, layer_ffn_dims=widths, layer_head_dims=dims)
        small = PrunedOPTForCausalLM(cfg).to(next(model.parameters()).dtype)
        PrunedOPTConfig.register_for_auto_class()
        PrunedOPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    else:
        from ...export.modeling_prunekit_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM
        base.pop("attention_bias", None)
        cfg = PrunedLlamaConfig(**base, layer_intermediate_sizes=widths, layer_head_dims=dims,
                                attention_qkv_bias=qkv_bias, attention_o_bias=o_bias)
        small = PrunedLlamaForCausalLM(cfg).to(next(model.parameters()).dtype)
        PrunedLlamaConfig.register_for_auto_class()
        PrunedLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    state = {}
    prefix = spec.layers_path + "."
    for key, value in model.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        b, rest = key[len(prefix):].split(".", 1)
        b = int(b)
        if b >= depth:
            continue
        ch = block_channels(genome, b, shape)
        name, kind = rest.rsplit(".", 1)
        if name == spec.attn_in[0]:
            value = value[ch["q"]]
        elif name in spec.attn_in[1:]:
            value = value[ch["kv"]]
        elif name == spec.attn_out[0] and kind == "weight":
            value = value[:, ch["q"]]
        elif name in spec.mlp_in:
            value = value[ch["mlp"]]
        elif name == spec.mlp_out[0] and kind == "weight":
            value = value[:, ch["mlp"]]
        state[key] = value
        if name == spec.attn_out[0] and kind == "weight" and not standard and shape.rotary:
            state[f"{prefix}{b}.self_attn.rope_index"] = ch["rope"]
    missing, unexpected = small.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight") or not model.config.tie_word_embeddings]
    if missing or unexpected:
        raise PrunekitError(f"slicing left weights unmatched: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if model.config.tie_word_embeddings:
        small.tie_weights()
    small.eval()
    # cache on and the dense model's generation defaults: a checkpoint saved with use_cache=False
    # (as the model is set while being pruned) would decode without a KV cache
    small.config.use_cache = True
    small.generation_config = copy.deepcopy(model.generation_config)
    small.generation_config.use_cache = True
    return small
