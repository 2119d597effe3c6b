"""Fitness of compressed candidates on calibration windows, against the dense model.

`kl`: mean over tokens of KL(P_dense || P_candidate) of the next-token distributions, the dense
side computed once for every calibration window and kept (exact log-probabilities, or a top-k
summary for large vocabularies: solvers/divergence.py). `ppl`: the candidate's perplexity on the
same windows. Lower is better for both. A candidate is run from cached block inputs through a
block list (BlockStack), never as a rebuilt model. The head runs over `stack.head_batch` windows
per call (one on the CPU unless a batch is set); windows are scored one by one and summed in
window order in float64, so a score does not depend on which process computes it (at one batch).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import PrunekitError
from ..engine.stack import BlockStack
from ..engine.sublayers import skipping
from ..models.plumbing import on_device
from ..solvers.divergence import kl_exact, kl_topk, topk_summary

FITNESS_KINDS = ("kl", "ppl")


class WindowFitness:
    """Scores last-block outputs of chosen windows; holds the dense reference."""

    def __init__(self, stack: BlockStack, kind: str, dense_output: torch.Tensor, topk: int = 0):
        if kind not in FITNESS_KINDS:
            raise PrunekitError(f"unknown fitness '{kind}': choose {' or '.join(FITNESS_KINDS)}")
        self.stack, self.kind = stack, kind
        self.vocab = None
        self.reference = []
        if kind == "kl":
            for logits in self._window_logits(dense_output):
                self.vocab = logits.shape[-1]
                if 0 < topk < self.vocab:
                    self.reference.append(topk_summary(logits, topk))
                else:
                    self.reference.append(F.log_softmax(logits, dim=-1))
        self.topk = topk if (self.vocab and 0 < topk < self.vocab) else 0

    @torch.no_grad()
    def _window_logits(self, hidden: torch.Tensor):
        """Each window's logits [L, V] (float32, on the CPU), the head run over `head_batch` windows per call."""
        dev, step = self.stack.engine.device, self.stack.head_batch
        mods = self.stack.adapter.post_block_modules()
        with on_device(mods, dev, None):
            for j in range(0, hidden.shape[0], step):
                h = hidden[j:j + step].to(dev)
                for m in mods:
                    h = m(h)
                h = h.float().cpu()
                for k in range(h.shape[0]):
                    yield self.stack.adapter.cap_logits(h[k])   # as the model's forward (Gemma 2 soft-caps)

    @torch.no_grad()
    def score(self, output: torch.Tensor, windows: list[int]) -> float:
        """Fitness of last-block outputs `output` [len(windows), L, d] of those windows."""
        total, count = 0.0, 0
        for j, logits in zip(windows, self._window_logits(output)):
            if self.kind == "kl":
                ref = self.reference[j]
                per_token = kl_topk(*ref, logits) if self.topk else kl_exact(ref, logits)
                total += float(per_token.double().sum())
                count += per_token.numel()
            else:
                target = self.stack.input_ids[j, 1:]
                total += float(F.cross_entropy(logits[:-1], target, reduction="sum").double())
                count += target.numel()
        value = total / count
        if not math.isfinite(value):
            return float("inf")
        return math.exp(value) if self.kind == "ppl" else value


class DepthEvaluator:
    """Candidates are 0/1 tuples over the blocks (1 = dropped), or with `sublayers` over each
    block's attention and MLP (units 2i and 2i + 1). Dense block inputs are cached at every
    `stride`-th block (stride 1 when they fit in `cache_bytes`); a candidate runs from the last
    cached input at or below its first dropped unit. ShortGPT's block influence of every unit is
    measured on the same pass (a sublayer's: from its input to its output)."""

    def __init__(self, stack: BlockStack, kind: str = "kl", topk: int = 0, cache_bytes: float = 4 * 2**30,
                 sublayers: bool = False):
        from ..solvers.similarity import block_influence
        self.stack, self.sublayers = stack, sublayers
        self.blocks = list(stack.adapter.layers)
        h = stack.start.hidden
        per_state = h.numel() * h.element_size()
        self.stride = max(1, math.ceil(per_state * (len(self.blocks) + 1) / cache_bytes))
        self.inputs: dict[int, torch.Tensor] = {0: h}
        self.block_influence = []
        for i, block in enumerate(self.blocks):
            out = stack.through([block], h)
            if sublayers:
                with skipping(stack.adapter, [(block, "mlp")]):
                    mid = stack.through([block], h)
                self.block_influence += [block_influence(h, mid), block_influence(mid, out)]
            else:
                self.block_influence.append(block_influence(h, out))
            h = out
            if (i + 1) % self.stride == 0:
                self.inputs[i + 1] = h
        self.fitness = WindowFitness(stack, kind, h, topk)

    def score(self, candidates: list[tuple], windows: list[int]) -> list[float]:
        out = []
        per = 2 if self.sublayers else 1
        for cand in candidates:
            if len(cand) != per * len(self.blocks):
                raise PrunekitError(f"depth candidate of {len(cand)} units for a model of {len(self.blocks)} blocks")
            gone = [cand[per * i:per * (i + 1)] for i in range(len(self.blocks))]
            first = next((i for i, g in enumerate(gone) if any(g)), len(gone))
            start = first // self.stride * self.stride
            kept = [b for i, b in enumerate(self.blocks) if i >= start and not all(gone[i])]
            skips = [(b, part) for b, g in zip(self.blocks, gone) if any(g) and not all(g)
                     for part, v in zip(("attention", "mlp"), g) if v]
            with skipping(self.stack.adapter, skips):
                hidden = self.stack.through(kept, self.inputs[start][windows])
            out.append(self.fitness.score(hidden, windows))
        return out


class AssembledEvaluator:
    """Candidates are per-block level indices; `load(block_index, level, block)` writes that
    level's weights into the block in place (from a database). The model's own blocks are the
    workspace: only blocks whose level changed since the last candidate are rewritten."""

    def __init__(self, stack: BlockStack, load, kind: str = "kl", topk: int = 0):
        self.stack, self.load = stack, load
        self.blocks = list(stack.adapter.layers)
        dense_out = stack.through(self.blocks, stack.start.hidden)
        self.fitness = WindowFitness(stack, kind, dense_out, topk)
        self.current: list = [None] * len(self.blocks)   # None: the dense weights

    def assemble(self, cand: tuple) -> None:
        for i, level in enumerate(cand):
            if self.current[i] != level:
                self.load(i, level, self.blocks[i])
                self.current[i] = level

    def score(self, candidates: list[tuple], windows: list[int]) -> list[float]:
        out = []
        for cand in candidates:
            if len(cand) != len(self.blocks):
                raise PrunekitError(f"candidate of {len(cand)} blocks for a model of {len(self.blocks)}")
            self.assemble(cand)
            hidden = self.stack.through(self.blocks, self.stack.start.hidden[windows])
            out.append(self.fitness.score(hidden, windows))
        return out
