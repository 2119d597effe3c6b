"""evo-shape's variant library: every block's attention and MLP variants, built once on
calibration inputs and kept on disk, then written into blocks to assemble candidates.

Variants of one block (each computed on the dense model's inputs to that block, so an entry is
independent of every other block's choice):
- attention: none (the sublayer left out), each KV-head count in `kv_choices` (the block's KV
  heads merged into fewer, keeping every query head: solvers/kv_groups.py, the weighted fit of
  keys by their queries' energy and of values through o_proj), or the dense attention;
- MLP: none, each width in `widths`, or the dense MLP. A width keeps the channels with the
  highest search-llm importance (summed over the gate and up rows and the down column), and
  down_proj is reformed on the calibration inputs (solvers/width.closed_form_reform, the exact
  least-squares fit of the kept columns); the reformation is kept only where it lowers the
  output error on those inputs (it always should; the check guards a badly conditioned H).

On disk (`block_0007.safetensors`): `mlp.W.idx` (kept channels), `mlp.W.down` (the down_proj
columns of width W), `kv.K.k` / `kv.K.v` (merged K and V rows for K heads; biases `.kb`/`.vb`).
Only what a variant changes is stored; the rest is the dense block's. The folder name is a
hash of the model's weights and config, the calibration tokens and the variant lists.

In a candidate the model keeps its dense shapes: a left-out sublayer has a zero output
projection, a narrower MLP zero rows and columns, fewer KV heads the merged head repeated for
the heads it stands for; each computes exactly what the smaller block computes
(`compact_state` writes that smaller block for the saved model).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...engine import BlockVisitor, LayerwiseEngine
from ...engine.sequential import BlockInputs
from ...models.adapter import ModelAdapter, get_path
from ...models.loading import cache_dir
from ...solvers import kv_groups as kvg
from ...solvers.stats import InputHessian
from ...solvers.width import closed_form_reform, top_mask
from ..width.search_llm import input_only, block_unit_scores
from ..width.slicing import shape_of
from .database import build_once, model_digest

NONE = 0


def fingerprint(adapter: ModelAdapter, ids: torch.Tensor, widths, kv_choices, percdamp: float, refine=None) -> str:
    h = model_digest(adapter, ids)
    h.update(json.dumps([list(widths), list(kv_choices), percdamp, "v1"]).encode())
    if refine is not None:
        h.update(json.dumps(["refine", *refine.key()]).encode())
    return h.hexdigest()[:20]


def output_error(w: torch.Tensor, dense: torch.Tensor, h: torch.Tensor) -> float:
    """tr((W - D) H (W - D)^T): the squared output error on the inputs whose Gram matrix is H."""
    d = (w.double() - dense.double())
    return float(((d @ h.double()) * d).sum())


class _Builder(BlockVisitor):
    """Statistics of one block's inputs (the dense model's), then every variant of it."""
    modifies = False

    def __init__(self, adapter: ModelAdapter, widths, kv_choices, percdamp: float, root: Path, refine=None,
                 inputs: BlockInputs | None = None):
        """`refine` (a refine.RefineSettings, not imported: refine.py builds on this module) trains
        every variant on `inputs`, the engine's block inputs."""
        self.adapter, self.widths, self.kv_choices, self.percdamp, self.root = adapter, widths, kv_choices, percdamp, root
        self.shape = shape_of(adapter, "evo-shape")
        self.reformed: dict[str, bool] = {}
        self.refine, self.inputs = refine, inputs
        self.refined: dict[str, list[float]] = {}

    def observe(self, index, block):
        r = self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        names = {"attn_in": r["q"], "attn_out": r["o"], "mlp_in": self.adapter.spec.mlp_in[0], "mlp_out": r["down"]}
        self.stats = {k: InputHessian(lins[n].in_features, lins[n].weight.device) for k, n in names.items()}
        return {lins[n]: input_only(self.stats[k]) for k, n in names.items()}

    @torch.no_grad()
    def edit(self, index, block):
        tensors = {}
        _, mlp_scores = block_unit_scores(self.adapter, block, self.shape, "importance", self.percdamp, self.stats)
        down = self.adapter.role(block, "down").weight.detach().float().cpu()
        h = self.stats["mlp_out"].H.cpu()
        for w in self.widths:
            keep = top_mask(mlp_scores, w)
            idx = torch.nonzero(keep).flatten()
            plain = down * keep[None, :]
            reformed = closed_form_reform(down, h, ~keep, damp=self.percdamp)
            better = output_error(reformed, down, h) < output_error(plain, down, h)
            self.reformed[f"{index}.{w}"] = better
            tensors[f"mlp.{w}.idx"] = idx
            tensors[f"mlp.{w}.down"] = (reformed if better else plain)[:, idx].contiguous()
        tensors.update(self._kv_variants(block))
        if self.refine is not None:
            w, hidden = self.refine.windows, self.inputs.hidden
            held = hidden[w:2 * w] if hidden.shape[0] > w else hidden[:w]
            errors = self.refine.apply(self.adapter, block, hidden[:w], held, self.inputs.kwargs[index], tensors,
                                       self.shape.kv_heads, down.shape[1], next(block.parameters()).device)
            self.refined.update({f"{index}.{k}": v for k, v in errors.items()})
        save_file(tensors, str(self.root / f"block_{index:04d}.safetensors"))
        self.stats = None

    def _kv_variants(self, block) -> dict:
        shape, r = self.shape, self.adapter.spec.roles
        lins = self.adapter.block_linears(block)
        q = self.adapter.role(block, "q").weight.detach().double().cpu()
        energy = ((q @ self.stats["attn_in"].H.double().cpu()) * q).sum(1).reshape(shape.heads, -1)
        kw = kvg.key_weights(energy, shape.kv_heads, shape.rotary)
        va = kvg.value_weights(lins[r["o"]].weight.detach().cpu(), shape.heads, shape.kv_heads)
        out = {}
        for kept in self.kv_choices:
            for name, merge, weight in (("k", kvg.merge_keys, kw), ("v", kvg.merge_values, va)):
                lin = lins[r[name]]
                rows = merge(kvg.heads_of(lin.weight.detach().cpu(), shape.kv_heads), kept, weight)
                out[f"kv.{kept}.{name}"] = rows.reshape(-1, rows.shape[-1]).contiguous()
                if lin.bias is not None:
                    bias = merge(kvg.heads_of(lin.bias.detach().cpu(), shape.kv_heads), kept, weight)
                    out[f"kv.{kept}.{name}b"] = bias.reshape(-1).contiguous()
        return out


class ShapeLibrary:
    """The variants on disk, and the level lists of the search: attention levels are
    [none, *kv_choices, dense KV heads], MLP levels [none, *widths, dense width]."""

    def __init__(self, root: Path):
        self.root = Path(root)
        meta = json.loads((self.root / "meta.json").read_text())
        self.widths, self.kv_choices = meta["widths"], meta["kv_choices"]
        self.kv_heads, self.intermediate = meta["kv_heads"], meta["intermediate"]
        self.meta = meta

    @classmethod
    def open_or_build(cls, adapter: ModelAdapter, ids: torch.Tensor, widths, kv_choices, percdamp: float = 0.01,
                      folder: str | os.PathLike | None = None, device: str = "cpu",
                      progress: bool = True, refine=None) -> tuple["ShapeLibrary", bool]:
        """The library for these inputs and variant lists, built if absent; (library, built_now).
        `refine` (refine.RefineSettings): train every variant by local distillation. The model is
        left unchanged."""
        widths, kv_choices = sorted(set(widths)), sorted(set(kv_choices))
        parent = Path(folder) if folder else cache_dir() / "evo-shape"
        root = parent / f"shapes-{fingerprint(adapter, ids, widths, kv_choices, percdamp, refine)}"

        def build(tmp: Path) -> dict:
            engine = LayerwiseEngine(adapter, device, progress=progress)
            inputs = engine.capture(ids)
            builder = _Builder(adapter, widths, kv_choices, percdamp, tmp, refine, inputs)
            engine.run(ids, builder, desc="evo-shape library", inputs=inputs)
            return {"widths": widths, "kv_choices": kv_choices, "kv_heads": adapter.dim("kv_heads"),
                    "intermediate": adapter.dim("mlp"), "blocks": adapter.num_layers, "percdamp": percdamp,
                    "calibration": list(ids.shape), "reformed": builder.reformed,
                    "refine": None if refine is None else {**vars(refine), "held_out": ids.shape[0] > refine.windows},
                    "refined": builder.refined}
        built = build_once(root, build)
        return cls(root), built

    @property
    def attention_levels(self) -> list[int]:
        """KV heads of each attention level (0: none)."""
        return [NONE, *self.kv_choices, self.kv_heads]

    @property
    def mlp_levels(self) -> list[int]:
        """MLP width of each level (0: none)."""
        return [NONE, *self.widths, self.intermediate]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def tensors(self, block: int, prefixes: list[str]) -> dict[str, torch.Tensor]:
        """The block's stored tensors whose keys start with one of `prefixes`."""
        with safe_open(str(self.root / f"block_{block:04d}.safetensors"), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if any(k.startswith(p) for p in prefixes)}

    def variant(self, block: int, level: tuple[int, int]) -> dict:
        """What a variant stores: {"kv": kept heads or None, "k", "v", ..., "width", "idx", "down"}."""
        a, m = level
        kv, width = self.attention_levels[a], self.mlp_levels[m]
        prefixes = variant_prefixes(kv, width, self.kv_heads, self.intermediate)
        return variant_of(self.tensors(block, prefixes), kv, width, self.kv_heads, self.intermediate)


def variant_prefixes(kv: int, width: int, kv_heads: int, intermediate: int) -> list[str]:
    """The key prefixes of what the variant (kv, width) stores (a dense or left-out sublayer: nothing)."""
    return ([f"kv.{kv}."] if 0 < kv < kv_heads else []) + ([f"mlp.{width}."] if 0 < width < intermediate else [])


def variant_of(tensors: dict, kv: int, width: int, kv_heads: int, intermediate: int) -> dict:
    """The variant (kv, width) out of a block's stored tensors: {"kv", "width"} and, by the last
    part of their keys, the tensors it changes ("k", "v", "idx", "down"; a refined variant also
    "q", "o", "in0", "in1", ...; biases with a trailing "b")."""
    out = {"kv": kv, "width": width}
    for prefix in variant_prefixes(kv, width, kv_heads, intermediate):
        out.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return out


def linear_names(adapter: ModelAdapter) -> dict:
    r = adapter.spec.roles
    return {"q": r["q"], "k": r["k"], "v": r["v"], "o": r["o"], "down": r["down"],
            "ffn_in": [r[role] for role in adapter.ffn_in_roles]}


@torch.no_grad()
def write_variant(adapter: ModelAdapter, block, dense: dict, var: dict, kv_heads: int) -> None:
    """Write the variant into `block` at the dense shapes (dense: linear name -> (weight, bias))."""
    names = linear_names(adapter)
    for name, (w, b) in dense.items():
        lin = get_path(block, name)
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    o, down = get_path(block, names["o"]), get_path(block, names["down"])
    if var["kv"] == NONE:
        o.weight.zero_()
        if o.bias is not None:
            o.bias.zero_()
    elif var["kv"] < kv_heads:
        for n in ("k", "v"):
            lin = get_path(block, names[n])
            lin.weight.copy_(kvg.expand(kvg.heads_of(var[n], var["kv"]), kv_heads).to(lin.weight))
            if lin.bias is not None:
                lin.bias.copy_(kvg.expand(kvg.heads_of(var[n + "b"], var["kv"]), kv_heads).to(lin.bias))
        for n in ("q", "o"):        # a refined variant's own q and o
            _copy_present(get_path(block, names[n]), var, n)
    if var["width"] == NONE:
        down.weight.zero_()
        if down.bias is not None:
            down.bias.zero_()
    elif "idx" in var:
        drop = torch.ones(down.in_features, dtype=torch.bool)
        drop[var["idx"]] = False
        for j, name in enumerate(names["ffn_in"]):
            lin = get_path(block, name)
            lin.weight[drop] = 0
            if lin.bias is not None:
                lin.bias[drop] = 0
            if f"in{j}" in var:     # a refined variant's own rows
                lin.weight[var["idx"]] = var[f"in{j}"].to(lin.weight)
                if lin.bias is not None:
                    lin.bias[var["idx"]] = var[f"in{j}b"].to(lin.bias)
        down.weight.zero_()
        down.weight[:, var["idx"]] = var["down"].to(down.weight)
        if down.bias is not None and "downb" in var:
            down.bias.copy_(var["downb"])


def _copy_present(lin, var: dict, key: str) -> None:
    if key in var:
        lin.weight.copy_(var[key])
        if lin.bias is not None:
            lin.bias.copy_(var[key + "b"])


def compact_state(adapter: ModelAdapter, dense_state: dict, var: dict, kv_heads: int) -> dict:
    """The block's state at its own shapes (block-relative keys): the variant's rows and columns
    only; a left-out sublayer's tensors are dropped (to_decilm keeps what the layout has)."""
    names = linear_names(adapter)
    state = dict(dense_state)

    def put(name: str, key: str, rows=None):
        """The variant's tensor `key` for linear `name`, or the dense one (rows `rows`) without it."""
        for suffix, part in (("weight", key), ("bias", key + "b")):
            if f"{name}.{suffix}" not in state:
                continue
            if part in var:
                state[f"{name}.{suffix}"] = var[part]
            elif rows is not None:
                state[f"{name}.{suffix}"] = state[f"{name}.{suffix}"][rows]

    if 0 < var["kv"] < kv_heads:
        for n in ("k", "v", "q", "o"):
            put(names[n], n)
    if "idx" in var:
        for j, name in enumerate(names["ffn_in"]):
            put(name, f"in{j}", var["idx"])
        put(names["down"], "down")
    return state


class ShapeLoader:
    """`load(block_index, level, block)` for AssembledEvaluator: the first time a block is touched
    its dense weights are kept, and every variant is written from them. Built where the model
    lives (a worker builds its own from its own model)."""

    def __init__(self, library: ShapeLibrary, adapter: ModelAdapter):
        self.library, self.adapter, self.dense = library, adapter, {}

    def __call__(self, block_index: int, level, block) -> None:
        if block_index not in self.dense:
            self.dense[block_index] = self.adapter.linear_copies(block)
        write_variant(self.adapter, block, self.dense[block_index], self.library.variant(block_index, tuple(level)),
                      self.library.kv_heads)

    @torch.no_grad()
    def restore(self, blocks) -> None:
        """Give every touched block its dense weights back."""
        for i, dense in self.dense.items():
            for name, (w, b) in dense.items():
                lin = get_path(blocks[i], name)
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
