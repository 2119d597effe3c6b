"""Checks and evaluation steps the workflows share."""
from __future__ import annotations

import torch

from ..errors import ConfigError, PrunekitError


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrunekitError(f"device {device} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise PrunekitError(f"unknown device '{device}': use cpu or cuda[:N]")
    return device


def at_least(name: str, value, least: int = 1) -> None:
    """`name` is an argument of the workflow (the CLI shows its flag)."""
    if value is not None and value < least:
        raise ConfigError(f"{{{name}}} must be at least {least} (got {value})")


def eval_names(spec) -> list[str]:
    """'wikitext2,ptb' or ['wikitext2', 'ptb'] -> names; None, '' and 'none' -> []."""
    if not spec or spec == "none":
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s.strip() and s.strip() != "none"]


def prepare_evals(names: list[str], tokenizer, seqlen: int, windows: int | None, data_dir) -> dict:
    """Tokenised evaluation texts, loaded before any pruning so a missing file fails early."""
    from ..eval.ppl import eval_tokens
    at_least("eval_seqlen", seqlen, 2)   # one token has nothing to predict
    at_least("eval_windows", windows)
    return {name: eval_tokens(name, tokenizer, seqlen, data_dir) for name in names}


def run_evals(model, texts: dict, seqlen: int, windows: int | None, device: str) -> dict:
    from ..eval.ppl import perplexity
    return {name: perplexity(model, None, seqlen=seqlen, windows=windows, device=device, text=t)
            for name, t in texts.items()}


def run_stream_evals(model, texts: dict, seqlen: int, windows: int | None, device: str, dtype="auto",
                     progress: bool = True) -> dict:
    """run_evals on a checkpoint streamed block by block (a spec or a StreamedModel); the same
    fields and protocol labels."""
    from ..eval.ppl import protocol_label
    from ..streaming import stream_perplexity
    out = {}
    for name, t in texts.items():
        r = stream_perplexity(model, t.ids, seqlen, windows, device, dtype, progress=progress)
        out[name] = {**r, **{k: v for k, v in t.info.items() if k != "short"},
                     "protocol": protocol_label(t.info["short"], seqlen, r["windows"], r["windows_total"])}
    return out


def calibration_size(cls, nsamples: int | None, seqlen: int | None) -> tuple[int | None, int | None]:
    """The method's default calibration where the caller gave none; zero and negative refused."""
    defaults = cls.calibration
    if defaults is None:
        return nsamples, seqlen
    nsamples = defaults.nsamples if nsamples is None else nsamples
    seqlen = defaults.seqlen if seqlen is None else seqlen
    at_least("nsamples", nsamples)
    at_least("seqlen", seqlen, 2)
    return nsamples, seqlen
