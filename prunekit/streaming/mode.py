"""Streamed or in memory: decided before anything is loaded. `--stream` and `--no-stream` decide
outright; otherwise a run streams when the checkpoint's weights at the load dtype exceed a fraction
(`--stream-above`) of the memory this process can still take, and what it asked for can stream."""
from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, PrunekitError
from ..models.loading import DTYPES, resolve_model_source
from .checkpoint import INDEX, SINGLE, ST_DTYPES
from .memory import available_memory
from .runstate import human_bytes
from .writer import read_header

DEFAULT_STREAM_ABOVE = 0.5
log = logging.getLogger("prunekit")


@dataclass(frozen=True)
class Mode:
    streamed: bool
    reason: str
    warning: str | None = None
    weights_bytes: int | None = None
    available_bytes: int | None = None
    stream_above: float | None = None

    def to_report(self) -> dict:
        return {"streamed": self.streamed, "reason": self.reason, "weights_bytes": self.weights_bytes,
                "available_bytes": self.available_bytes, "stream_above": self.stream_above}


def decide_mode(stream: bool | None, weights: int | None, available: int | None, fraction: float,
                cannot_stream: str | None = None) -> Mode:
    """`stream`: True (--stream), False (--no-stream) or None (automatic). `weights` and `available`
    in bytes (None: unknown, so no automatic streaming). `cannot_stream` says why this run could
    not stream (its method, no output...), or None."""
    facts = dict(weights_bytes=weights, available_bytes=available, stream_above=fraction)
    if stream is not None:
        return Mode(stream, "--stream" if stream else "--no-stream", **facts)
    if weights is None:
        return Mode(False, "auto: not a local safetensors checkpoint, so its size is unknown before loading",
                    **facts)
    if available is None:
        return Mode(False, "auto: the available memory is not known", **facts)
    compared = f"{human_bytes(weights)} of weights {{}} {fraction:g} × {human_bytes(available)} available"
    if weights <= fraction * available:
        return Mode(False, "auto: " + compared.format("≤"), **facts)
    over = compared.format(">")
    if cannot_stream:
        return Mode(False, f"auto: {over}, but {cannot_stream}",
                    f"{over}, but {cannot_stream}: loading it in memory anyway", **facts)
    return Mode(True, "auto: " + over, **facts)


def _safetensors_files(folder: Path) -> list[Path] | None:
    if (folder / INDEX).is_file():
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    return [folder / SINGLE] if (folder / SINGLE).is_file() else None


def weight_bytes(spec: str, dtype: str | torch.dtype = "auto") -> int | None:
    """Bytes of the weights of checkpoint `spec` once loaded at `dtype` ("auto": as stored), from
    its safetensors headers (nothing loaded). None when that cannot be known without loading: a
    hub id, a GGUF file or alias, a checkpoint without safetensors, an unreadable header (the
    loader then says what is wrong)."""
    try:
        source = resolve_model_source(spec)
        files = _safetensors_files(Path(source.path)) if source.kind == "local" else None
        if files is None:
            return None
        target = DTYPES[dtype] if isinstance(dtype, str) and dtype != "auto" else (None if dtype == "auto" else dtype)
        total = 0
        for f in files:
            for entry in read_header(f)[0].values():
                a, b = entry["data_offsets"]
                floating = entry["dtype"] in ST_DTYPES
                total += math.prod(entry["shape"]) * target.itemsize if target and floating else b - a
        return total
    except (PrunekitError, OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def check_fraction(stream_above: float) -> None:
    if not stream_above > 0:
        raise ConfigError(f"{{stream_above}} must be greater than 0 (got {stream_above})")


def choose_mode(specs: list[str], dtype, stream: bool | None, stream_above: float,
                cannot_stream: str | None = None) -> Mode:
    """The mode of a run that would load the checkpoints `specs` at `dtype` (a prune: the model;
    an evaluation with KL: the model and the dense one). A model too big for memory that cannot
    stream gets one warning line, and runs in memory."""
    check_fraction(stream_above)
    weights = available = None
    if stream is None:
        sizes = [weight_bytes(s, dtype) for s in specs]
        weights = None if None in sizes else sum(sizes)
        available = available_memory() if weights is not None else None
    mode = decide_mode(stream, weights, available, stream_above, cannot_stream)
    if mode.warning:
        log.warning(mode.warning)
    return mode
