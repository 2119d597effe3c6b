"""From a genome to weights: which rows and columns each block keeps, the masked dense model
used for fitness and reformation, and the physically smaller model that is saved."""
from __future__ import annotations


import torch
import torch.nn as nn

from ...errors import PrunekitError
from ...models.adapter import FAMILIES, ModelAdapter
from ...models.block_shapes import full_width
from ...models import decilm
from ...models.plumbing import finish_smaller
from ...models.variable_width import empty_model
from .genome import Genome, Shape


def _sliceable(spec) -> bool:
    return spec.variable_width is not None


def shape_of(adapter: ModelAdapter, method: str = "search-llm") -> Shape:
    spec = adapter.spec
    known = ", ".join(t for f in FAMILIES if _sliceable(f) for t in f.model_types
                      if not t.startswith("prunekit") and t != decilm.MODEL_TYPE)
    why = f" (width search supports {known} so far)"
    adapter.require("its blocks already differ in shape (Nemotron-NAS layout); search the dense model instead",
                    adapter.config.model_type != decilm.MODEL_TYPE, method)
    adapter.require("no per-layer-width modeling code for this family yet" + why, spec.variable_width is not None, method)
    adapter.require("partial rotary embeddings cannot be sliced yet", not adapter.partial_rotary, method)
    # per-head q/k norms: only the llama modeling code (HeadNorm) slices them
    adapter.require("per-head q/k norms cannot be sliced yet" + why, not spec.qk_norms or spec.variable_width == "llama",
                    method)
    per_block = {}
    if not full_width(adapter):     # a width-pruned input: each block's widths, read from its linears
        kv = adapter.dim("kv_heads")
        per_block = dict(block_head_dims=tuple(adapter.role(b, "k").out_features // kv for b in adapter.layers),
                         block_intermediates=tuple(adapter.role(b, "down").in_features for b in adapter.layers))
    return Shape(adapter.num_layers, adapter.dim("hidden"), adapter.dim("heads"), adapter.dim("kv_heads"),
                 adapter.dim("head_dim"), adapter.dim("mlp"), rotary=spec.rotary,
                 mlp_matrices=len(adapter.ffn_in_roles) + 1, **per_block)


def rope_index(genome: Genome, b: int, shape: Shape) -> torch.Tensor:
    """[kv_heads, kept dims]: original dims kept by each KV head (with rotary pairs: the first
    halves, then their partners, which is the layout rotate-half expects)."""
    rows = []
    for g in range(shape.kv_heads):
        units = torch.nonzero(genome.attn[b][g]).flatten()
        rows.append(torch.cat([units, units + shape.pairs_of(b)]) if shape.rotary else units)
    return torch.stack(rows)


def block_channels(genome: Genome, b: int, shape: Shape) -> dict:
    """Kept output rows of q, k/v and kept intermediate channels (also the consumers' columns).
    With fewer KV heads, "kv_sliced" are the rows the smaller model takes: the first old head of
    each merged group (every old head of a group holds the merged head, see KVFit)."""
    idx = rope_index(genome, b, shape)
    group = shape.heads // shape.kv_heads
    d = shape.head_dim_of(b)
    q = torch.cat([h * d + idx[h // group] for h in range(shape.heads)])
    kv = torch.cat([g * d + idx[g] for g in range(shape.kv_heads)])
    out = {"q": q, "kv": kv, "mlp": torch.nonzero(genome.mlp[b]).flatten(), "rope": idx}
    kept = genome.kv_kept(b, shape)
    if kept != shape.kv_heads:
        step = shape.kv_heads // kept
        out["kv_sliced"] = torch.cat([g * d + idx[g] for g in range(0, shape.kv_heads, step)])
        out["kv_heads"] = kept
    return out


class KVFit:
    """Merged K and V heads of each block for each KV-head count (solvers/kv_groups.py), fitted
    once from the block's dense weights: `how` is mean or weighted (query energies per block,
    [heads, head_dim], from the calibration statistics)."""

    def __init__(self, how: str, q_energy: list[torch.Tensor] | None = None):
        self.how, self.q_energy, self.cache = how, q_energy, {}

    @torch.no_grad()
    def write(self, adapter: ModelAdapter, lins: dict, b: int, shape: Shape, kept: int) -> None:
        """Give each old KV head of block b (dense weights in `lins`) its merged group's weights."""
        from ...solvers import kv_groups as kvg
        r = adapter.spec.roles
        k, v = lins[r["k"]], lins[r["v"]]
        if (b, kept) not in self.cache:
            kv = shape.kv_heads
            kw = kvg.key_weights(self.q_energy[b], kv, shape.rotary) if self.how == "weighted" else None
            va = kvg.value_weights(lins[r["o"]].weight.detach().cpu(), shape.heads, kv) if self.how == "weighted" else None
            merged = {}
            for name, lin, merge, w in (("k", k, kvg.merge_keys, kw), ("v", v, kvg.merge_values, va)):
                merged[name] = [merge(kvg.heads_of(t.detach().cpu(), kv), kept, w)
                                for t in (lin.weight, lin.bias) if t is not None]
            self.cache[(b, kept)] = merged
        for name, lin in (("k", k), ("v", v)):
            parts = self.cache[(b, kept)][name]
            lin.weight.copy_(kvg.expand(parts[0], shape.kv_heads).to(lin.weight))
            if lin.bias is not None:
                lin.bias.copy_(kvg.expand(parts[1], shape.kv_heads).to(lin.bias))


def write_genome(adapter: ModelAdapter, lins: dict, ch: dict, b: int, shape: Shape, kv_fit: KVFit | None) -> None:
    """Zero the removed producer rows of block b and, with fewer KV heads, write the merged ones."""
    keep_producer_rows(adapter, lins, ch)
    if "kv_heads" in ch:
        kv_fit.write(adapter, lins, b, shape, ch["kv_heads"])


class DenseWeights:
    """A copy of the dense block projections, to write masked versions of them into the model."""

    def __init__(self, adapter: ModelAdapter, kv_fit: KVFit | None = None):
        self.adapter, self.kv_fit = adapter, kv_fit
        self.weights = [adapter.linear_copies(b) for b in adapter.layers]
        self.layers = list(adapter.layers)

    @torch.no_grad()
    def apply(self, genome: Genome, shape: Shape) -> None:
        """Write the genome's masked weights (zeros for removed rows and columns) and keep only
        the first `depth` blocks in the decoder."""
        r = self.adapter.spec.roles
        for b in range(genome.depth):
            block, dense = self.layers[b], self.weights[b]
            ch = block_channels(genome, b, shape)
            lins = self.adapter.block_linears(block)
            for name, lin in lins.items():
                _copy(lin, dense[name])
            write_genome(self.adapter, lins, ch, b, shape, self.kv_fit)
            keep_cols(lins[r["o"]], ch["q"])
            keep_cols(lins[r["down"]], ch["mlp"])
        self.set_depth(genome.depth)

    def set_depth(self, depth: int) -> None:
        self.adapter.replace_layers(self.layers[:depth])

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


def keep_rows(lin: nn.Linear, keep: torch.Tensor, rows: slice = slice(None)) -> None:
    """Zero the removed output rows among `rows` (all, or one part of a fused matrix; `keep`
    counts from the part's first row), biases included (a bias left on a removed q/k row would
    still add to the attention logits)."""
    part = torch.arange(lin.out_features)[rows]
    mask = torch.zeros(lin.out_features, dtype=torch.bool)
    mask[part] = True
    mask[part[keep]] = False
    lin.weight[mask] = 0
    if lin.bias is not None:
        lin.bias[mask] = 0


def producer_channels(adapter: ModelAdapter, ch: dict) -> list[tuple[str, torch.Tensor]]:
    """(role, kept rows of that role) for every producer: q, k, v and the FFN inputs."""
    return [("q", ch["q"]), ("k", ch["kv"]), ("v", ch["kv"])] + [(role, ch["mlp"]) for role in adapter.ffn_in_roles]


def keep_producer_rows(adapter: ModelAdapter, lins: dict, ch: dict) -> None:
    for role, keep in producer_channels(adapter, ch):
        name, rows = adapter.role_rows(role)
        keep_rows(lins[name], keep, rows)


def keep_cols(lin: nn.Linear, keep: torch.Tensor) -> None:
    mask = torch.ones(lin.in_features, dtype=torch.bool)
    mask[keep] = False
    lin.weight[:, mask] = 0


@torch.no_grad()
def sliced_model(model, genome: Genome, shape: Shape):
    """The physically smaller model computing what the masked model computes: the family's
    standard class when attention is untouched and every MLP has one width, otherwise its
    variable-width modeling code (per-block widths, original rotary frequencies and softmax scale)."""
    adapter = ModelAdapter(model)
    spec, r = adapter.spec, adapter.spec.roles
    depth = genome.depth
    widths = [int(genome.mlp[b].sum()) for b in range(depth)]
    dims = [shape.unit_dims(genome.pairs_kept(b)) for b in range(depth)]
    small = empty_model(adapter, depth, widths, dims, [genome.kv_kept(b, shape) for b in range(depth)])
    standard = not hasattr(small.config, "layer_head_dims")
    out_spec = ModelAdapter(small).spec
    out_roles = out_spec.roles     # the small model's linears (fused parts come apart)
    attention = out_roles["q"].rsplit(".", 1)[0]    # the module holding the kept dims' rotary index
    producers = {}                                  # linear name -> [(role, rows of that role)]
    for role in ("q", "k", "v") + adapter.ffn_in_roles:
        name, rows = adapter.role_rows(role)
        producers.setdefault(name, []).append((role, rows))
    state = {}
    prefix = spec.layers_path + "."
    out_prefix = out_spec.layers_path + "."
    dense_state = model.state_dict()
    for key, value in dense_state.items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        b, rest = key[len(prefix):].split(".", 1)
        b = int(b)
        if b >= depth:
            continue
        ch = block_channels(genome, b, shape)
        kept = dict(producer_channels(adapter, ch))
        if "kv_sliced" in ch:       # the merged heads (written into the model by KVFit)
            kept["k"] = kept["v"] = ch["kv_sliced"]
        name, kind = rest.rsplit(".", 1)
        if name in producers:
            for role, rows in producers[name]:
                state[f"{out_prefix}{b}.{out_roles[role]}.{kind}"] = value[rows][kept[role]]
            continue
        if name == r["o"] and kind == "weight":
            value = value[:, ch["q"]]
        elif name == r["down"] and kind == "weight":
            value = value[:, ch["mlp"]]
        state[f"{out_prefix}{b}.{rest}"] = value
        if name == r["o"] and kind == "weight" and not standard and shape.rotary:
            # a width-pruned input keeps its kept dims' original frequencies through its own rope_index
            old = dense_state.get(f"{prefix}{b}.{attention}.rope_index")
            state[f"{out_prefix}{b}.{attention}.rope_index"] = ch["rope"] if old is None else torch.stack(
                [old[g][ch["rope"][g]] for g in range(shape.kv_heads)])
    missing, unexpected = small.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight") or not model.config.tie_word_embeddings]
    if missing or unexpected:
        raise PrunekitError(f"slicing left weights unmatched: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return finish_smaller(small, model)
