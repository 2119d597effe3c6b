"""Perplexity under a stated protocol (the "2048 protocol" of GPTQ and SparseGPT, arXiv 2210.17323; docs/methods.md).

The test text is tokenised once, cut into non-overlapping windows of `seqlen` (tail dropped),
each window scored on its positions 1..L-1, and PPL = exp(mean of the per-window mean NLL).
Every result carries a protocol label such as `wt2-2048` or `wt2-2048/32` (first 32 windows).
Windows go through the model `batch` at a time (models/plumbing.py `windows_per_call`: one on the
CPU unless set; on CUDA from the free memory); each window's NLL is still its own mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.calibration import tokenize
from ..data.sources import load_source
from ..errors import PrunekitError
from ..models.plumbing import windows_per_call
from ..progress import steps

# name -> evaluation split, short label, documents used, window cap (SparseGPT's C4 subset)
PPL_DATASETS = {
    "wikitext2": {"split": "test", "short": "wt2", "max_docs": None, "max_windows": None},
    "ptb": {"split": "test", "short": "ptb", "max_docs": None, "max_windows": None},
    "c4": {"split": "validation", "short": "c4", "max_docs": 1100, "max_windows": 256},
}


@dataclass
class EvalText:
    ids: torch.Tensor
    info: dict


def eval_tokens(spec: str, tokenizer, seqlen: int, data_dir: str | None = None) -> EvalText:
    """Token ids of an evaluation text and the facts of its protocol."""
    name = spec.split(":")[0]
    proto = PPL_DATASETS.get(name, {"split": None, "short": None, "max_docs": None, "max_windows": None})
    source = load_source(spec, proto["split"] or "test", data_dir)
    docs = source.documents[:proto["max_docs"]] if proto["max_docs"] else source.documents
    ids = tokenize(tokenizer, source.join.join(docs))
    if proto["max_windows"]:
        ids = ids[:proto["max_windows"] * seqlen]
    if len(ids) < seqlen:
        raise PrunekitError(f"{source.where}: {len(ids)} tokens, shorter than one evaluation window of {seqlen}")
    info = {"dataset": source.name, "split": source.split, "join": source.join, "source": source.where,
            "short": proto["short"] or source.name, "documents": len(docs) if proto["max_docs"] else None}
    if "subset" in source.where:
        info["note"] = "local subset of the split: not comparable with figures computed on the full split"
    return EvalText(torch.tensor(ids, dtype=torch.long), info)


@torch.no_grad()
def model_window_bytes(model, seqlen: int) -> int:
    """One window's working set in a whole-model forward: the logits in float32 three times over
    (logits, float copy, log-softmax) and twenty hidden-sized activations per token."""
    config = model.config
    return 4 * seqlen * (3 * getattr(config, "vocab_size", 1) + 20 * getattr(config, "hidden_size", 1))


def perplexity_of_ids(model, ids: torch.Tensor, seqlen: int = 2048, windows: int | None = None,
                      device: str = "cpu", progress: bool = True, desc: str = "perplexity",
                      batch: int | None = None) -> dict:
    total = ids.numel() // seqlen
    if total == 0:
        raise PrunekitError(f"{ids.numel()} tokens, shorter than one evaluation window of {seqlen}")
    n = total if windows is None else min(windows, total)
    if n < 1:
        raise PrunekitError("--eval-windows must be at least 1")
    nlls = []
    was = next(model.parameters()).device
    model.to(device)
    step = windows_per_call(device, model_window_bytes(model, seqlen), n, batch)
    unit = "window" if step == 1 else f"batch of {step} windows"
    try:
        for w0 in steps(range(0, n, step), desc, unit, enabled=progress):   # log lines when stderr is no terminal
            x = ids[w0 * seqlen:min(n, w0 + step) * seqlen].view(-1, seqlen).to(device)
            out = model(x, use_cache=False).logits
            for k in range(x.shape[0]):
                nll = F.cross_entropy(out[k, :-1].float(), x[k, 1:])
                if not torch.isfinite(nll):
                    raise PrunekitError(f"non-finite loss in evaluation window {w0 + k}: the model produces NaN/Inf")
                nlls.append(nll.item())
    finally:
        model.to(was)
    mean_nll = sum(nlls) / len(nlls)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "seqlen": seqlen, "windows": n, "windows_total": total}


def protocol_label(short: str, seqlen: int, windows: int, total: int) -> str:
    return f"{short}-{seqlen}" + (f"/{windows}" if windows < total else "")


def perplexity(model, tokenizer, dataset: str = "wikitext2", seqlen: int = 2048, windows: int | None = None,
               data_dir: str | None = None, device: str = "cpu", progress: bool = True,
               text: EvalText | None = None, batch: int | None = None) -> dict:
    """Perplexity of `model` on a named dataset or file; the result names its protocol."""
    text = text or eval_tokens(dataset, tokenizer, seqlen, data_dir)
    res = perplexity_of_ids(model, text.ids, seqlen, windows, device, progress, desc=f"evaluating {text.info['dataset']}",
                            batch=batch)
    res.update({k: v for k, v in text.info.items() if k != "short"})
    res["protocol"] = protocol_label(text.info["short"], seqlen, res["windows"], res["windows_total"])
    return res
