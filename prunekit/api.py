"""prunekit.prune(model, config, calibration): the verb plus a config object. Every method goes
through the same path: the registry finds it from the config's type, it checks its settings,
runs once, and reports."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .data.calibration import Calibration, checked_calibration_ids, input_vocab_size
from .errors import PrunekitError
from .methods.base import Job
from .methods.options import check_types
from .methods.registry import method_for
from .models.adapter import ModelAdapter
from .models.plumbing import batching, cache_disabled


@dataclass
class PruneResult:
    method: str
    config: dict
    seconds: float
    sparsity: dict
    events: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    model: object = None      # the pruned model: the same object, or a new one for methods that build one


def prune(model, config, calibration: Calibration | torch.Tensor | None = None, device: str = "cpu",
          progress: bool = True, batch: int | None = None) -> PruneResult:
    """Prune `model` with the method that `config` belongs to. Methods that edit in place change
    `model` itself; methods that build a smaller model (width) leave it masked and return the new
    one in `result.model`.

    `calibration` is a Calibration or an integer tensor [nsamples, seqlen] of token ids below the
    model's vocabulary size; methods that need no data (magnitude) ignore it. The config's fields
    (again: they may have been set after construction) and the calibration are checked first, each
    failure a one-line PrunekitError (ConfigError for a field).

    `batch`: calibration windows per forward call in every stage of the run (None: the enclosing
    `models.plumbing.batching(...)`, else the rule: one on the CPU, from free memory on CUDA)."""
    cls = method_for(config)
    check_types(config)
    method = cls(config, ModelAdapter(model))     # an unsupported model is named before the data
    method.check()
    ids = None
    if cls.needs_calibration():
        if calibration is None:
            raise PrunekitError(f"method {cls.name} needs calibration data")
        ids = checked_calibration_ids(calibration, input_vocab_size(model))
    start = time.perf_counter()
    with cache_disabled(model), batching(batch):
        pruned = method.run(Job(ids, device, progress, batch=batch))
    seconds = time.perf_counter() - start
    new = cls.builds_new_model(config)
    if new is not None and (pruned is model) == new:
        raise PrunekitError(f"method {cls.name} broke its contract: builds_new_model is {cls.builds_new_model(config)}")
    return PruneResult(cls.name, config.to_dict(), seconds, method.sparsity(pruned), method.events, method.summary(),
                       pruned)
