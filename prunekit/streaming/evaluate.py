"""Evaluate checkpoints larger than memory: the windows go through one streamed block at a time
(all windows of a chunk per block, each block read straight onto the compute device, the windows
`batch` per call by models/plumbing.py's rule, the activations on the device where they fit), then the head turns the final hidden states into logits.
Perplexity follows prunekit.eval.ppl (exp of the mean over windows of each window's mean NLL), KL
follows prunekit.eval.kl (the same per-position formula); the counts of a report
(parameters, sparsity) are read one block at a time."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..engine import LayerwiseEngine
from ..errors import PrunekitError
from ..eval.kl import kl_and_agreement
from ..models.adapter import ModelAdapter
from .checkpoint import StreamedModel
from ..progress import bar as progress_bar


class _Blocks:
    """A streamed model ready to carry windows: the head loaded, the embeddings only while a chunk's
    block inputs are captured, each block during its pass."""

    def __init__(self, model: str | StreamedModel, dtype, device: str):
        self.sm = model if isinstance(model, StreamedModel) else StreamedModel(model, dtype)
        self.adapter = ModelAdapter(self.sm.model)
        for m in self.adapter.post_block_modules():
            self.sm.load(self.sm.module_path(m))
        self.engine = LayerwiseEngine(self.adapter, device, progress=False)

    def _capture(self, windows: torch.Tensor):
        paths = [self.sm.module_path(m) for m in self.adapter.pre_block_modules()]
        for p in paths:
            self.sm.load(p)      # a tied embedding is the head's tensor: loading it costs nothing
        try:
            return self.engine.capture(windows)
        finally:
            for p in paths:
                self.sm.release(p)

    def final_hidden(self, windows: torch.Tensor, bar) -> torch.Tensor:
        """The last block's outputs for `windows` [n, L], each block read from the checkpoint and freed."""
        inputs = self._capture(windows)
        layers_path = self.adapter.spec.layers_path
        for i in range(self.adapter.num_layers):
            block = self.sm.load(f"{layers_path}.{i}", self.engine.device)    # read straight onto the device
            inputs.hidden = self.engine.forward_block(block, inputs, index=i)
            self.sm.release(f"{layers_path}.{i}")
            bar.update(1)
        return inputs.hidden

    def logits(self, hidden: torch.Tensor, j: int) -> torch.Tensor:
        """Window j's logits [L, V] (one window at a time: a vocabulary-wide tensor per window)."""
        return self.engine.head(hidden[j:j + 1])[0].float()


def _chunks(n: int, chunk_windows: int | None) -> range:
    return range(0, n, chunk_windows or n)


@torch.no_grad()
def stream_perplexity(model: str | StreamedModel, ids: torch.Tensor, seqlen: int = 2048, windows: int | None = None,
                      device: str = "cpu", dtype: str | torch.dtype = "auto", chunk_windows: int | None = None,
                      progress: bool = True) -> dict:
    """`chunk_windows` bounds the activations held (default: all windows at once); each chunk
    reads the whole checkpoint once more."""
    total = ids.numel() // seqlen
    if total == 0:
        raise PrunekitError(f"{ids.numel()} tokens, shorter than one evaluation window of {seqlen}")
    n = total if windows is None else min(windows, total)
    if n < 1:
        raise PrunekitError("--eval-windows must be at least 1")
    m = _Blocks(model, dtype, device)
    windows_ids = ids[:n * seqlen].view(n, seqlen)
    chunks = _chunks(n, chunk_windows)
    nlls = []
    bar = progress_bar(m.adapter.num_layers * len(chunks), "ppl (streamed)", "block", progress)
    for c in chunks:
        hidden = m.final_hidden(windows_ids[c:c + (chunk_windows or n)], bar)
        for j in range(hidden.shape[0]):
            logits = m.logits(hidden, j)[:-1]
            nll = F.cross_entropy(logits, windows_ids[c + j, 1:].to(logits.device))
            if not torch.isfinite(nll):
                raise PrunekitError(f"non-finite loss in evaluation window {c + j}: the model produces NaN/Inf")
            nlls.append(nll.item())
    bar.close()
    mean_nll = sum(nlls) / len(nlls)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "seqlen": seqlen, "windows": n, "windows_total": total,
            "streamed": True}


@torch.no_grad()
def stream_kl(model: str | StreamedModel, dense: str | StreamedModel, input_ids: torch.Tensor, device: str = "cpu",
              dtype: str | torch.dtype = "auto", chunk_windows: int | None = None, progress: bool = True) -> dict:
    """kl_to_dense with both models streamed: each chunk of windows [n, L] goes through the model's
    blocks, then the dense model's, one block in memory; then, window by window, both heads and
    KL(P_dense || P_model) at every position. Memory: both models' embeddings and heads, one block,
    the two models' hidden states of a chunk."""
    m, d = _Blocks(model, dtype, device), _Blocks(dense, dtype, device)
    n = input_ids.shape[0]
    chunks = _chunks(n, chunk_windows)
    bar = progress_bar((m.adapter.num_layers + d.adapter.num_layers) * len(chunks), "kl to dense (streamed)",
                       "block", progress)
    kls, agree = [], []
    for c in chunks:
        x = input_ids[c:c + (chunk_windows or n)]
        hm, hd = m.final_hidden(x, bar), d.final_hidden(x, bar)
        for j in range(x.shape[0]):
            kl, same = kl_and_agreement(d.logits(hd, j), m.logits(hm, j))
            kls.append(kl.cpu())
            agree.append(same.cpu())
    bar.close()
    kl, same = torch.cat(kls), torch.cat(agree)
    return {"kl": float(kl.double().mean()), "top1_agreement": float(same.double().mean()), "tokens": kl.numel(),
            "direction": "KL(dense || model), nats per token", "streamed": True}


@torch.no_grad()
def stream_counts(sm: StreamedModel) -> tuple[dict, dict]:
    """param_counts and sparsity_stats (prunekit.stats) of a streamed model: each block read once
    and freed, the other tensors read one at a time (a tied one once)."""
    adapter = ModelAdapter(sm.model)
    layers_path = adapter.spec.layers_path
    total = nonzero = zeros = numel = 0
    per_layer = {}
    for i in range(adapter.num_layers):
        block = sm.load(f"{layers_path}.{i}")
        for p in block.parameters():
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
        for name, lin in adapter.block_linears(block).items():
            z = lin.weight.numel() - int(torch.count_nonzero(lin.weight))
            per_layer[f"layers.{i}.{name}"] = z / lin.weight.numel()
            zeros += z
            numel += lin.weight.numel()
        sm.release(f"{layers_path}.{i}")
    counted = set()
    for name, p in sm.model.named_parameters():
        if name.startswith(layers_path + ".") or any(t in counted for t in sm.twins.get(name, ())):
            continue        # blocks are counted above, a tied parameter once
        counted.add(name)
        t = sm.read(name) if p.is_meta else p
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return ({"params_total": total, "params_nonzero": nonzero},
            {"overall": zeros / numel if numel else 0.0, "per_layer": per_layer})
