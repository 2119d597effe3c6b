"""Small context managers every stage needs: the KV cache off while a model is being pruned or
measured with full forwards, and modules visiting the compute device and coming back; and the
rules every stage that forwards windows shares: how many windows go in one call (`batch`) and
whether calibration activations stay on the compute device."""
from __future__ import annotations

import copy

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn as nn

from ..errors import PrunekitError


@contextmanager
def cache_disabled(model: nn.Module):
    """`model.config.use_cache = False` inside, the previous value restored after (a checkpoint
    saved with the cache off would decode without one)."""
    config = getattr(model, "config", None)
    before = getattr(config, "use_cache", None)
    if config is not None:
        config.use_cache = False
    try:
        yield model
    finally:
        if config is not None:
            config.use_cache = before


@contextmanager
def on_device(modules, device, back="cpu"):
    """Move `modules` (one or several) to `device` inside, and to `back` afterwards (None: each
    back to where it was)."""
    mods = [modules] if isinstance(modules, nn.Module) else list(modules)
    homes = [home_device(m) if back is None else back for m in mods]
    for m in mods:
        m.to(device)
    try:
        yield modules
    finally:
        for m, home in zip(mods, homes):
            m.to(home)


# ---- batched forwards and device residency: one rule for every stage that forwards windows ----

_BATCH: ContextVar[int | None] = ContextVar("prunekit_batch", default=None)

MAX_BATCH = 64             # windows per call at most, whatever the memory (diminishing returns beyond)
BATCH_SHARE = 0.25         # a batch's working set may take this share of the free device memory
RESIDENT_MARGIN = 0.20     # activations stay on the device when they fit in (1 - this) of its free memory


@contextmanager
def batching(batch: int | None):
    """Every forward inside runs `batch` windows per call unless told otherwise (None: leave the
    enclosing setting, i.e. the rule of `windows_per_call`)."""
    if batch is None:
        yield None
        return
    if int(batch) != batch or batch < 1:
        raise PrunekitError(f"batch must be a positive number of windows, not {batch!r}")
    token = _BATCH.set(int(batch))
    try:
        yield int(batch)
    finally:
        _BATCH.reset(token)


def enclosing_batch() -> int | None:
    """The batch of the enclosing `batching(...)`, or None: what a worker process must be given."""
    return _BATCH.get()


def set_process_batch(batch: int | None) -> None:
    """A worker process's batch for its whole life (a spawned process does not inherit the context)."""
    _BATCH.set(batch)


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (what the caching allocator holds unused counts as free);
    None for any other device."""
    if not is_cuda(device) or not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    free, _ = torch.cuda.mem_get_info(dev)
    return free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)


def windows_per_call(device, per_window_bytes: float, n: int | None = None, batch: int | None = None,
                     default: int = 1) -> int:
    """Windows per forward call: `batch` if given, else the enclosing `batching(...)`, else the
    rule: `default` off CUDA (1 for the engine: CPU results stay those of one window per call);
    on CUDA the most windows whose working set (`per_window_bytes` each) takes at most BATCH_SHARE
    of the free device memory, between 1 and MAX_BATCH. Never more than `n` windows."""
    chosen = batch if batch is not None else _BATCH.get()
    if chosen is None:
        free = free_device_memory(device)
        if free is None:
            chosen = default
        else:
            chosen = int(min(MAX_BATCH, max(1, BATCH_SHARE * free // max(1.0, per_window_bytes))))
    return max(1, min(chosen, n)) if n else max(1, chosen)


def keep_on_device(device, activation_bytes: float, resident_bytes: float) -> bool:
    """Whether calibration activations stay on the compute device: on CUDA when two copies of them
    (a pass's inputs and outputs) plus `resident_bytes` (a block, the solver's workspace, a batch's
    working set) fit in (1 - RESIDENT_MARGIN) of the free memory. On any other device they stay
    where they are computed too, since that is where the offload would put them."""
    free = free_device_memory(device)
    if free is None:
        return not is_cuda(device)
    return 2 * activation_bytes + resident_bytes <= (1 - RESIDENT_MARGIN) * free


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (meta tensors count at their size)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def home_device(module: nn.Module) -> torch.device:
    """Where a module's weights live now (the CPU for a module without real parameters)."""
    for p in module.parameters():
        if not p.is_meta:
            return p.device
    return torch.device("cpu")


def block_forward_bytes(block: nn.Module, seqlen: int, heads: int, float_bytes: int = 4) -> int:
    """Upper bound of one window's working set in a block's forward: every linear's output, a few
    hidden-sized temporaries and the attention scores (eager attention materialises them; fused
    kernels need less), in float32."""
    outs = sum(m.out_features for m in block.modules() if isinstance(m, nn.Linear))
    d = max((m.in_features for m in block.modules() if isinstance(m, nn.Linear)), default=0)
    return float_bytes * seqlen * (outs + 4 * d + 2 * max(1, heads) * seqlen)


def solver_workspace_bytes(block: nn.Module) -> int:
    """The largest statistics a solver keeps for a block: a float32 Hessian per linear and one
    matrix of that size more (its inverse or Cholesky factor)."""
    sq = [m.in_features ** 2 for m in block.modules() if isinstance(m, nn.Linear)]
    return 4 * (sum(sq) + max(sq, default=0))


def finish_smaller(small: nn.Module, model: nn.Module) -> nn.Module:
    """A smaller model built from `model`, ready to use and save: its head tied as the source's,
    eval mode, the KV cache on with the source's generation defaults (a model saved with
    use_cache=False, as it is set while being pruned, would decode without a KV cache)."""
    if model.config.tie_word_embeddings:
        small.tie_weights()
    small.eval()
    small.config.use_cache = True
    small.generation_config = copy.deepcopy(model.generation_config)
    small.generation_config.use_cache = True
    return small
