"""Perplexity of a checkpoint larger than memory: the evaluation windows go through one streamed
block at a time (all windows of a chunk per block), then the head scores them. Same protocol and
formula as prunekit.eval.ppl: exp of the mean over windows of each window's mean NLL."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..engine import LayerwiseEngine
from ..errors import PrunekitError
from ..models.adapter import ModelAdapter
from .checkpoint import StreamedModel


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
    sm = model if isinstance(model, StreamedModel) else StreamedModel(model, dtype)
    adapter = ModelAdapter(sm.model)
    for m in adapter.pre_block_modules() + adapter.post_block_modules():
        sm.load(sm.module_path(m))
    engine = LayerwiseEngine(adapter, device, progress=False)
    windows_ids = ids[:n * seqlen].view(n, seqlen)
    chunk = chunk_windows or n
    nlls = []
    layers_path = adapter.spec.layers_path
    bar = tqdm(total=adapter.num_layers * math.ceil(n / chunk), desc="ppl (streamed)", unit="block",
               disable=None if progress else True)
    for c in range(0, n, chunk):
        inputs = engine.capture(windows_ids[c:c + chunk])
        for i in range(adapter.num_layers):
            block = sm.load(f"{layers_path}.{i}").to(engine.device)
            inputs.hidden = engine.forward_block(block, inputs, index=i)
            block.to(engine.offload)
            sm.release(f"{layers_path}.{i}")
            bar.update(1)
        for j in range(inputs.hidden.shape[0]):
            logits = engine.head(inputs.hidden[j:j + 1])[0, :-1].float()
            nll = F.cross_entropy(logits, windows_ids[c + j, 1:].to(logits.device))
            if not torch.isfinite(nll):
                raise PrunekitError(f"non-finite loss in evaluation window {c + j}: the model produces NaN/Inf")
            nlls.append(nll.item())
    bar.close()
    mean_nll = sum(nlls) / len(nlls)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "seqlen": seqlen, "windows": n, "windows_total": total,
            "streamed": True}
