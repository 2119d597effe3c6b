"""A searched sub-network: per block an attention gene (kept rotary pairs of every KV head, the
same count for every head so the heads stay rectangular; or, with KV groups, the number of KV
heads the block keeps, every query head and dim kept) and an MLP gene (kept intermediate
channels), plus the number of leading blocks kept. Mutation, crossover and the parameter count
live here; scores come from the importance solver."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...solvers.width import mutate_mask, resize_mask


@dataclass(frozen=True)
class Shape:
    """The dense model's block geometry."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    rotary: bool = True           # units are rotary pairs (dims p, p + head_dim/2), else single dims
    mlp_matrices: int = 3         # gate, up, down; OPT's fc1, fc2: 2
    # a width-pruned input: each block's own head width and MLP width (empty: all as above)
    block_head_dims: tuple = ()
    block_intermediates: tuple = ()

    @property
    def pairs(self) -> int:
        """Attention units per KV head."""
        return self.head_dim // 2 if self.rotary else self.head_dim

    def head_dim_of(self, b: int) -> int:
        return self.block_head_dims[b] if self.block_head_dims else self.head_dim

    def pairs_of(self, b: int) -> int:
        """Attention units per KV head of block b (its kept pairs keep the rotate-half layout)."""
        d = self.head_dim_of(b)
        return d // 2 if self.rotary else d

    def intermediate_of(self, b: int) -> int:
        return self.block_intermediates[b] if self.block_intermediates else self.intermediate

    @property
    def uniform(self) -> bool:
        return not self.block_head_dims and not self.block_intermediates

    def block_params(self, b: int) -> int:
        return self.attn_params(self.pairs_of(b)) + self.mlp_params(self.intermediate_of(b))

    def kv_choices(self) -> list[int]:
        """KV-head counts a block may keep: the divisors of its KV heads (so each new KV head
        stands for whole old ones, and still divides the query heads)."""
        return [c for c in range(1, self.kv_heads + 1) if self.kv_heads % c == 0]

    def unit_dims(self, units_kept: int) -> int:
        return 2 * units_kept if self.rotary else units_kept

    def unit_step(self, multiple: int) -> int:
        """Attention units per head whose dims are a multiple of `multiple` come in steps of this."""
        return multiple // math.gcd(multiple, 2) if self.rotary else multiple

    def attn_params(self, pairs_kept: int, kv_kept: int | None = None) -> int:
        dims = self.unit_dims(pairs_kept)     # kept dims per head
        return self.hidden * dims * (2 * self.heads + 2 * (self.kv_heads if kv_kept is None else kv_kept))

    def mlp_params(self, channels: int) -> int:
        return self.mlp_matrices * self.hidden * channels

    @property
    def dense_params(self) -> int:
        if self.uniform:
            return self.layers * (self.attn_params(self.pairs) + self.mlp_params(self.intermediate))
        return sum(self.block_params(b) for b in range(self.layers))


@dataclass
class Genome:
    attn: list[torch.Tensor]      # per block: bool [kv_heads, pairs], the same count in every row
    mlp: list[torch.Tensor]       # per block: bool [intermediate]
    depth: int
    meta: dict = field(default_factory=dict, compare=False)
    kv: list[int] = field(default_factory=list)     # per block: KV heads kept (empty: all, in every block)

    def key(self) -> bytes:
        parts = [self.depth.to_bytes(4, "little")]
        for a, m in zip(self.attn[:self.depth], self.mlp[:self.depth]):
            parts += [a.numpy().tobytes(), m.numpy().tobytes()]
        parts += [c.to_bytes(4, "little") for c in self.kv[:self.depth]]
        return b"".join(parts)

    def pairs_kept(self, b: int) -> int:
        return int(self.attn[b][0].sum())

    def kv_kept(self, b: int, shape: Shape) -> int:
        return self.kv[b] if self.kv else shape.kv_heads

    def params(self, shape: Shape) -> int:
        return sum(shape.attn_params(self.pairs_kept(b), self.kv_kept(b, shape)) + shape.mlp_params(int(self.mlp[b].sum()))
                   for b in range(self.depth))

    def ratios(self, shape: Shape) -> dict:
        attn = [self.pairs_kept(b) / shape.pairs_of(b) for b in range(self.depth)]
        if self.kv:     # the attention ratio counts parameters: KV heads and dims both
            attn = [shape.attn_params(self.pairs_kept(b), self.kv[b]) / shape.attn_params(shape.pairs_of(b))
                    for b in range(self.depth)]
        out = {"depth": self.depth, "attn": attn,
               "mlp": [int(self.mlp[b].sum()) / shape.intermediate_of(b) for b in range(self.depth)]}
        if self.kv:
            out["kv_heads"] = list(self.kv[:self.depth])
        return out

    def widths(self, shape: Shape) -> dict:
        """Per kept block: its kept head dim, KV heads and MLP width (what the sliced model's matrices have)."""
        return {"head_dim": [shape.unit_dims(self.pairs_kept(b)) for b in range(self.depth)],
                "kv_heads": [self.kv_kept(b, shape) for b in range(self.depth)],
                "mlp": [int(self.mlp[b].sum()) for b in range(self.depth)]}

    def copy(self) -> "Genome":
        return Genome([a.clone() for a in self.attn], [m.clone() for m in self.mlp], self.depth, kv=list(self.kv))


# paper Table 1, by target kept fraction: (lowest attention ratio, lowest MLP ratio, lowest depth fraction)
SEARCH_SPACE = ((0.9, 0.9, 0.6, 1.0), (0.8, 0.8, 0.4, 1.0), (0.7, 0.7, 0.2, 0.9375), (0.0, 0.6, 0.1, 0.875))


def search_space(keep: float) -> tuple[float, float, float]:
    """(min attention ratio, min MLP ratio, min depth fraction) for a target; the 70% row's
    attention bound is printed as 0.3 in the paper, read as 0.7 (docs/methods.md)."""
    for target, attn, mlp, depth in SEARCH_SPACE:
        if keep >= target - 1e-9:
            return attn, mlp, depth
    return SEARCH_SPACE[-1][1:]


def snap(value: float, step: int, full: int) -> int:
    """The multiple of `step` nearest to `value` (at least one step), or the dense width `full`
    itself: a block left at its dense width is untouched, whatever its divisibility."""
    if value >= full:
        return full
    return min(max(1, round(value / step)) * step, full)


def neighbour(width: int, step: int, full: int, up: bool) -> int | None:
    """The next width on the lattice of `snap` above or below `width` (None past either end)."""
    if up:
        return None if width >= full else min((width // step + 1) * step, full)
    lower = (width - 1) // step * step
    return lower if lower >= step else None


@dataclass
class Space:
    shape: Shape
    attn_choices: list[list[int]]  # per block: allowed kept pairs per head
    mlp_choices: list[list[int]]   # per block: allowed kept channels
    depth_choices: list[int]
    attn_scores: list[torch.Tensor]
    mlp_scores: list[torch.Tensor]
    alpha: float = 0.8             # mask similarity kept by a mutation
    multiple: int = 1              # kept MLP widths and head dims are multiples of this (or dense)
    kv_choices: list[list[int]] = field(default_factory=list)   # per block: KV heads it may keep (empty: all)

    @classmethod
    def build(cls, shape: Shape, keep: float, attn_scores, mlp_scores, search_depth: bool,
              prune_attention: bool = True, multiple: int = 1, kv_groups: bool = False):
        """The paper's ratio grids, each width snapped to the lattice of `multiple` (head dims:
        their units in steps of `shape.unit_step`), so mutation and crossover, which only pick
        from these choices or copy whole genes, keep every genome on the lattice."""
        a_min, m_min, d_min = search_space(keep)
        step = shape.unit_step(multiple)
        attn = [sorted({snap(r * shape.pairs_of(b), step, shape.pairs_of(b)) for r in _grid(a_min, 0.01)})
                if prune_attention and not kv_groups else [shape.pairs_of(b)] for b in range(shape.layers)]
        kv = [shape.kv_choices() for _ in range(shape.layers)] if kv_groups else []
        mlp = [sorted({snap(r * shape.intermediate_of(b), multiple, shape.intermediate_of(b))
                       for r in _grid(m_min, 0.05)}) for b in range(shape.layers)]
        depths = list(range(math.ceil(d_min * shape.layers), shape.layers + 1)) if search_depth else [shape.layers]
        return cls(shape, attn, mlp, depths, attn_scores, mlp_scores, multiple=multiple, kv_choices=kv)

    def initial(self, keep: float, band: float = math.inf) -> Genome:
        """The same inheriting ratio in every block (top-scored units): attention on its grid,
        the MLP width then set to the exact channel count (on the lattice) that brings the
        parameter count closest to the target (the grid's 0.05 steps are too coarse for a
        uniform start). Where a coarse lattice leaves the uniform start outside keep ± band,
        single blocks move one lattice step toward the target until it is inside: each time the
        block whose moved channels carry the smallest share of its MLP scores (when shrinking)
        or the largest (when growing)."""
        s = self.shape
        target = keep * s.dense_params
        attn, mlp, kv = [], [], []
        for b in range(s.layers):    # each block's share of the target: its share of the parameters
            a = min(self.attn_choices[b], key=lambda c: abs(c / s.pairs_of(b) - keep))
            c = min(self.kv_choices[b], key=lambda c: abs(s.attn_params(a, c) / s.attn_params(a) - keep)) \
                if self.kv_choices else s.kv_heads
            share = target / s.layers if s.uniform else target * s.block_params(b) / s.dense_params
            attn.append(a)
            kv.append(c)
            mlp.append(snap((share - s.attn_params(a, c)) / s.mlp_params(1), self.multiple, s.intermediate_of(b)))

        def error():
            return (sum(s.attn_params(a, c) + s.mlp_params(m) for a, c, m in zip(attn, kv, mlp)) - target) / s.dense_params
        while abs(error()) > band:
            up = error() < 0
            moves = [(b, w) for b in range(s.layers)
                     if (w := neighbour(mlp[b], self.multiple, s.intermediate_of(b), up)) is not None]
            if not moves:
                break
            b, w = max(moves, key=lambda t: (self._moved_share(*t, mlp[t[0]]) * (1 if up else -1), -t[0]))
            before = abs(error())
            mlp[b], old = w, mlp[b]
            if abs(error()) >= before:      # overshoots: no single step gets closer
                mlp[b] = old
                break
        return self.with_ratios(attn, mlp, s.layers, kv=kv if self.kv_choices else None)

    def _moved_share(self, b: int, new: int, old: int) -> float:
        """Share of block b's MLP scores carried by the top-scored channels ranked between `old`
        and `new` (those an initialisation keeping the top `new` instead of `old` adds or drops)."""
        ranked = self.mlp_scores[b].double().sort(descending=True).values
        return float(ranked[min(old, new):max(old, new)].sum() / ranked.sum().clamp_min(1e-300))

    def with_ratios(self, attn: list[int], mlp: list[int], depth: int, base: Genome | None = None,
                    kv: list[int] | None = None) -> Genome:
        out_a, out_m = [], []
        for b in range(self.shape.layers):
            sa, sm = self.attn_scores[b], self.mlp_scores[b]
            if base is None:
                out_a.append(torch.stack([_top(sa[g], attn[b]) for g in range(self.shape.kv_heads)]))
                out_m.append(_top(sm, mlp[b]))
            else:
                out_a.append(torch.stack([resize_mask(base.attn[b][g], attn[b], sa[g]) for g in range(self.shape.kv_heads)]))
                out_m.append(resize_mask(base.mlp[b], mlp[b], sm))
        kv = list(kv) if kv is not None else (list(base.kv) if base is not None else [])
        return Genome(out_a, out_m, depth, kv=kv)

    def mutate(self, g: Genome, p_depth: float, p_ratio: float, p_mask: float, gen: torch.Generator) -> Genome:
        rnd = lambda: float(torch.rand((), generator=gen))
        pick = lambda xs: xs[int(torch.randint(len(xs), (), generator=gen))]
        depth = pick(self.depth_choices) if len(self.depth_choices) > 1 and rnd() < p_depth else g.depth
        out = g.copy()
        out.depth = depth
        for b in range(self.shape.layers):
            a = pick(self.attn_choices[b]) if rnd() < p_ratio else g.pairs_kept(b)
            m = pick(self.mlp_choices[b]) if rnd() < p_ratio else int(g.mlp[b].sum())
            out.attn[b] = torch.stack([mutate_mask(g.attn[b][h], a, p_mask, self.alpha, gen, self.attn_scores[b][h])
                                       for h in range(self.shape.kv_heads)])
            out.mlp[b] = mutate_mask(g.mlp[b], m, p_mask, self.alpha, gen, self.mlp_scores[b])
            if self.kv_choices and rnd() < p_ratio:
                out.kv[b] = pick(self.kv_choices[b])
        return out


def crossover(a: Genome, b: Genome, gen: torch.Generator) -> Genome:
    """Every gene (per block: attention ratio and masks; MLP ratio and mask) from one parent."""
    if a.depth != b.depth:
        raise ValueError("crossover needs parents of equal depth")
    child = a.copy()
    for i in range(len(a.attn)):
        if float(torch.rand((), generator=gen)) < 0.5:
            child.attn[i] = b.attn[i].clone()
            if child.kv:
                child.kv[i] = b.kv[i]
        if float(torch.rand((), generator=gen)) < 0.5:
            child.mlp[i] = b.mlp[i].clone()
    return child


def _grid(lo: float, step: float) -> list[float]:
    n = int(round((1.0 - lo) / step))
    return [1.0 - k * step for k in range(n + 1)]


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    from ...solvers.width import top_mask
    return top_mask(scores, keep)
