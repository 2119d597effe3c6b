"""Calibration that cannot fit is refused before any of it is built: drawing the windows and
embedding them would otherwise run for minutes and end in the kernel's kill or a MemoryError.

The figure is a lower bound, so only what certainly cannot fit is refused: the token ids (int64)
and the two activation buffers the layer-wise engine keeps over all windows (a block's inputs and
its outputs, [nsamples, seqlen, hidden] in the model's dtype). Statistics (Hessians), the depth
methods' cached block inputs and the transient memory of one window's forward come on top."""
from __future__ import annotations

import torch

from ..errors import PrunekitError
from ..models.adapter import ModelAdapter
from ..streaming.memory import available_memory
from ..streaming.runstate import human_bytes

ID_BYTES = torch.empty((), dtype=torch.int64).element_size()
ACTIVATION_COPIES = 2


def calibration_bytes(nsamples: int, seqlen: int, hidden: int, itemsize: int) -> int:
    """The least memory a layer-wise pass over nsamples windows of seqlen tokens holds."""
    return nsamples * seqlen * (ID_BYTES + ACTIVATION_COPIES * hidden * itemsize)


def check_calibration_fits(model, nsamples: int, seqlen: int, available: int | None = None,
                           flags: tuple[str, str] = ("--nsamples", "--seqlen"),
                           adapter: ModelAdapter | None = None) -> None:
    """Refuse in one line, naming the `flags` that set the window count and length, when
    `available` bytes (default: what this process can still take, cgroup limits included) cannot
    hold the calibration of `model` (`adapter`: the caller's ModelAdapter of it, if it holds one)."""
    available = available_memory() if available is None else available
    if available is None:       # not Linux: nothing to compare with
        return
    hidden = (ModelAdapter(model) if adapter is None else adapter).dim("hidden")
    itemsize = next(model.parameters()).element_size()
    need = calibration_bytes(nsamples, seqlen, hidden, itemsize)
    if need > available:
        n_flag, len_flag = flags
        raise PrunekitError(
            f"{n_flag} {nsamples} × {len_flag} {seqlen} cannot fit: the windows need at least {human_bytes(need)} "
            f"(token ids and {ACTIVATION_COPIES} activation copies of {nsamples} × {seqlen} × {hidden} values of "
            f"{itemsize} bytes), and this process can take {human_bytes(available)}; lower {n_flag} or {len_flag}")
