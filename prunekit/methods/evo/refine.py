"""Local distillation of the library's variants (--refine-steps; Puzzle's blockwise local
distillation, BLD, Bercovich et al. 2024, arXiv 2411.19146).

Each attention variant (fewer KV heads) and each MLP variant (a narrower width) is written into its
block with the other sublayer dense, and trained to reproduce the dense block's output on the dense
model's inputs to that block (the first calibration windows), so variants stay independent of
each other's choice, as the library's closed-form entries are. Only the variant's own linears
learn:
- an MLP variant: the kept rows of the input projections and the kept columns of down_proj (the
  dropped ones have masked gradients and are zeroed again after every step, so they stay zero);
- an attention variant: q, k, v and o, with each merged K/V head's copies tied (every copy gets
  the summed gradient of the shared head, so AdamW moves the copies alike and they stay equal).

A trained variant is kept only where its error fell on held-out windows, the calibration windows
after the training ones (on the training windows themselves when the calibration has no more); the
recorded errors [before, after] are those held-out ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...models.adapter import ModelAdapter, get_path
from ...engine.block_training import block_error, train_block
from ...solvers import kv_groups as kvg
from .library import linear_names, variant_of, write_variant


@dataclass(frozen=True)
class RefineSettings:
    """AdamW `steps` of `batch` windows at `lr` on the first `windows` calibration windows."""
    steps: int
    windows: int
    lr: float
    batch: int = 1
    seed: int = 0

    def key(self) -> list:
        """What the library's name depends on."""
        return [self.steps, self.windows, self.lr, self.batch, self.seed]

    def apply(self, adapter, block, x, held, kwargs, tensors, kv_heads, intermediate, device) -> dict:
        """refine_block with these settings (what the library builder calls)."""
        return refine_block(adapter, block, x, held, kwargs, tensors, kv_heads, intermediate, self, device)


def _tie(kv: int, kv_heads: int):
    """A gradient hook for K or V rows (or bias) holding `kv` merged heads, each repeated for the
    kv_heads // kv heads it stands for (kv_groups.expand): every copy gets the summed gradient of
    its group (the gradient of the shared head)."""
    def hook(g):
        grouped = g.reshape(kv, kv_heads // kv, -1)
        return grouped.sum(1, keepdim=True).expand_as(grouped).reshape(g.shape)
    return hook


def _params(linears) -> list:
    return [p for lin in linears for p in (lin.weight, lin.bias) if p is not None]


def refine_block(adapter: ModelAdapter, block, x: torch.Tensor, held: torch.Tensor, kwargs: dict, tensors: dict,
                 kv_heads: int, intermediate: int, settings: RefineSettings, device) -> dict[str, list[float]]:
    """Train every narrower variant in `tensors` (the block's library entries, updated in place) on
    block inputs `x`, judged on `held`; returns {"kv.K" or "mlp.W": [held-out error before, after]}.
    The block ends with its dense weights."""
    dense = adapter.linear_copies(block)
    with torch.no_grad():
        y, y_held = ([block(w[j:j + 1].to(device), **kwargs).to(w.device) for j in range(w.shape[0])] for w in (x, held))
    fit = _Fit(adapter, block, dense, torch.cat(y), torch.cat(y_held), x, held, kwargs, kv_heads, intermediate,
               settings, device)
    out = {}
    try:
        for kv in sorted({int(k.split(".")[1]) for k in tensors if k.startswith("kv.")}):
            out[f"kv.{kv}"] = fit.attention(tensors, kv)
        for width in sorted({int(k.split(".")[1]) for k in tensors if k.startswith("mlp.")}):
            out[f"mlp.{width}"] = fit.mlp(tensors, width)
    finally:
        write_variant(adapter, block, dense, {"kv": kv_heads, "width": intermediate}, kv_heads)
    return out


class _Fit:
    """One block's inputs and targets, and the training of one variant at a time."""

    def __init__(self, adapter, block, dense, y, y_held, x, held, kwargs, kv_heads, intermediate, settings, device):
        self.adapter, self.block, self.dense, self.kwargs = adapter, block, dense, kwargs
        self.x, self.y, self.held, self.y_held = x, y, held, y_held
        self.kv_heads, self.intermediate, self.settings, self.device = kv_heads, intermediate, settings, device
        self.names = linear_names(adapter)

    def _held_error(self) -> float:
        return block_error(self.block, self.held, self.y_held, self.kwargs, self.device, self.settings.batch)

    def _train(self, var: dict, masks: dict, params: list, hooks: dict | None = None) -> tuple[list[float], bool]:
        """Train the written variant; ([held-out before, after], kept). Not kept: the variant is as it was."""
        s = self.settings
        before = self._held_error()
        train_block(self.block, self.x, self.y, self.kwargs, masks, self.device, steps=s.steps, lr=s.lr,
                    batch=s.batch, seed=s.seed, params=params, grad_hooks=hooks)
        after = self._held_error()
        if after < before:
            return [before, after], True
        write_variant(self.adapter, self.block, self.dense, var, self.kv_heads)
        return [before, before], False

    def attention(self, tensors: dict, kv: int) -> list[float]:
        var = variant_of(tensors, kv, self.intermediate, self.kv_heads, self.intermediate)
        write_variant(self.adapter, self.block, self.dense, var, self.kv_heads)
        lins = {n: get_path(self.block, self.names[n]) for n in ("q", "k", "v", "o")}
        ties = {p: _tie(kv, self.kv_heads) for n in ("k", "v") for p in _params([lins[n]])}
        errors, kept = self._train(var, {}, _params(lins.values()), ties)
        if kept:
            with torch.no_grad():
                for n, lin in lins.items():
                    for suffix, p in (("", lin.weight), ("b", lin.bias)):
                        if p is None:
                            continue
                        t = p.detach()
                        if n in ("k", "v"):     # one copy of each merged head
                            t = kvg.heads_of(t, self.kv_heads)[::self.kv_heads // kv].reshape(-1, *t.shape[1:])
                        tensors[f"kv.{kv}.{n}{suffix}"] = t.cpu().clone().contiguous()
        return errors

    def mlp(self, tensors: dict, width: int) -> list[float]:
        var = variant_of(tensors, self.kv_heads, width, self.kv_heads, self.intermediate)
        write_variant(self.adapter, self.block, self.dense, var, self.kv_heads)
        idx = var["idx"]
        keep = torch.zeros(self.intermediate, dtype=torch.bool)
        keep[idx] = True
        ins = [get_path(self.block, n) for n in self.names["ffn_in"]]
        down = get_path(self.block, self.names["down"])
        masks = {lin.weight: keep[:, None].to(lin.weight.dtype) for lin in ins}
        masks.update({lin.bias: keep.to(lin.bias.dtype) for lin in ins if lin.bias is not None})
        masks[down.weight] = keep[None, :].to(down.weight.dtype)
        errors, kept = self._train(var, masks, _params([*ins, down]))
        if kept:
            with torch.no_grad():
                for j, lin in enumerate(ins):
                    tensors[f"mlp.{width}.in{j}"] = lin.weight.detach()[idx].cpu().clone().contiguous()
                    if lin.bias is not None:
                        tensors[f"mlp.{width}.in{j}b"] = lin.bias.detach()[idx].cpu().clone()
                tensors[f"mlp.{width}.down"] = down.weight.detach()[:, idx].cpu().clone().contiguous()
                if down.bias is not None:
                    tensors[f"mlp.{width}.downb"] = down.bias.detach().cpu().clone()
        return errors
