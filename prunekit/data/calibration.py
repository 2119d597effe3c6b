"""Calibration windows: N random windows of L tokens, fixed by the seed (the SparseGPT and Wanda convention; docs/methods.md),
or text the model generates itself when the user has no data (self-calibration)."""
from __future__ import annotations

import random
from dataclasses import dataclass, asdict

import torch
from tqdm.auto import tqdm

from ..errors import PrunekitError
from .sources import TextSource, load_source


@dataclass
class Calibration:
    """Token windows [nsamples, seqlen] and where they came from (goes into the report)."""
    input_ids: torch.Tensor
    dataset: str
    split: str | None
    seed: int
    where: str = ""

    @property
    def nsamples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seqlen(self) -> int:
        return self.input_ids.shape[1]

    def describe(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "input_ids"}
        d.update(nsamples=self.nsamples, seqlen=self.seqlen)
        return d


_ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def input_vocab_size(model) -> int | None:
    """Rows of the model's input embedding: token ids must lie below it (None when it has none)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def checked_calibration_ids(calibration, vocab_size: int | None) -> torch.Tensor:
    """The token ids of `calibration` (a Calibration or a tensor), checked before any work: a 2-D
    integer tensor [nsamples, seqlen], not empty, every id in [0, vocab_size) (the rows of the
    model's input embedding; not checked when None). Returned as int64, which embeddings take.
    Each failure is one PrunekitError line naming calibration and what is wrong."""
    ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
    if not isinstance(ids, torch.Tensor):
        raise PrunekitError(f"calibration must be a Calibration or a 2-D integer torch tensor of token ids "
                            f"[nsamples, seqlen] (got {type(ids).__name__})")
    shape = list(ids.shape)
    if ids.dim() != 2:
        hint = ": add the batch dimension, e.g. ids.unsqueeze(0)" if ids.dim() == 1 else ""
        raise PrunekitError(f"calibration must be 2-D token ids [nsamples, seqlen] (got shape {shape}){hint}")
    if ids.numel() == 0:
        raise PrunekitError(f"calibration is empty (shape {shape})")
    if ids.dtype not in _ID_DTYPES:
        raise PrunekitError(f"calibration must hold integer token ids (got dtype {ids.dtype}): token ids from a "
                            f"tokenizer, e.g. torch.long")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        raise PrunekitError(f"calibration token ids must lie in [0, {vocab_size}) (the model's input embedding rows); "
                            f"these range over [{lo}, {hi}]: a tokenizer of another model?"
                            if vocab_size is not None else
                            f"calibration token ids must be at least 0 (the smallest is {lo})")
    return ids if ids.dtype == torch.int64 else ids.long()


def tokenize(tokenizer, text: str) -> list[int]:
    # verbose=False: a whole test set is longer than model_max_length on purpose (it is windowed later)
    return tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]


def sample_windows(tokenizer, source: TextSource, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """SparseGPT/Wanda sampling: documents drawn with random.randint until one is longer than
    seqlen, then a random window of it; stream sources are tokenised once and windowed."""
    if nsamples < 1 or seqlen < 2:
        raise PrunekitError(f"need nsamples >= 1 and seqlen >= 2 (got {nsamples}, {seqlen})")
    rng = random.Random(seed)
    windows = []
    if source.kind == "stream":
        ids = tokenize(tokenizer, source.text())
        if len(ids) <= seqlen:
            raise PrunekitError(f"{source.where or source.name}: {len(ids)} tokens, shorter than one calibration window of {seqlen}")
        for _ in range(nsamples):
            s = rng.randint(0, len(ids) - seqlen - 1)
            windows.append(ids[s:s + seqlen])
    else:
        docs = source.documents
        cache: dict[int, list[int]] = {}
        for _ in range(nsamples):
            while True:
                i = rng.randint(0, len(docs) - 1)
                if i not in cache:
                    cache[i] = tokenize(tokenizer, docs[i])
                    if len(cache) == len(docs) and all(len(t) <= seqlen for t in cache.values()):
                        raise PrunekitError(
                            f"{source.where or source.name}: no document is longer than seqlen={seqlen} tokens")
                if len(cache[i]) > seqlen:
                    break
            ids = cache[i]
            s = rng.randint(0, len(ids) - seqlen - 1)
            windows.append(ids[s:s + seqlen])
    return torch.tensor(windows, dtype=torch.long)


@torch.no_grad()
def self_generated_windows(model, tokenizer, nsamples: int, seqlen: int, seed: int = 0,
                           device: str = "cpu", batch_size: int = 8) -> torch.Tensor:
    """Self-calibration: sample seqlen tokens from the model itself, starting from BOS
    (top-k 50, temperature 1), so pruning needs no external data."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise PrunekitError("self-calibration needs a tokenizer with a BOS or EOS token")
    torch.manual_seed(seed)
    was_device = next(model.parameters()).device
    model.to(device)
    out = []
    try:
        for b in tqdm(range(0, nsamples, batch_size), desc="self-calibration", unit="batch", disable=None):
            n = min(batch_size, nsamples - b)
            prompt = torch.full((n, 1), start, dtype=torch.long, device=device)
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                 top_p=1.0, temperature=1.0, max_new_tokens=seqlen - 1, min_new_tokens=seqlen - 1,
                                 use_cache=True, pad_token_id=tokenizer.eos_token_id)
            out.append(gen[:, :seqlen].cpu())
    finally:
        model.to(was_device)
    return torch.cat(out)


def build_calibration(spec: str, model, tokenizer, nsamples: int, seqlen: int, seed: int = 0,
                      data_dir: str | None = None, device: str = "cpu") -> Calibration:
    """'self', a named dataset (train split by default) or a local file."""
    if spec == "self":
        ids = self_generated_windows(model, tokenizer, nsamples, seqlen, seed, device)
        return Calibration(ids, "self", None, seed, where="generated by the model")
    source = load_source(spec, "train", data_dir)
    ids = sample_windows(tokenizer, source, nsamples, seqlen, seed)
    return Calibration(ids, source.name, source.split, seed, where=source.where)
