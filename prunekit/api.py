"""prunekit.prune(model, config, calibration): the verb plus a config object."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .data.calibration import Calibration
from .engine import LayerwiseEngine
from .errors import PrunekitError
from .methods import method_for
from .methods.base import OnlyBlocks
from .models.adapter import ModelAdapter
from .stats import sparsity_stats


@dataclass
class PruneResult:
    method: str
    config: dict
    seconds: float
    sparsity: dict
    events: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    model: object = None      # the pruned model: the same object, except for width methods (a new, smaller one)


def prune(model, config, calibration: Calibration | torch.Tensor | None = None, device: str = "cpu",
          progress: bool = True) -> PruneResult:
    """Prune `model` in place with the method that `config` belongs to.

    `calibration` is a Calibration or a LongTensor [nsamples, seqlen] of token ids; methods that
    need no data (magnitude) ignore it."""
    adapter = ModelAdapter(model)
    name, impl = method_for(config)
    method = impl(config, adapter)
    method.check()
    if getattr(impl, "kind", "") == "depth":
        return _prune_depth(name, method, adapter, calibration, device, progress)
    if getattr(impl, "kind", "") == "width":
        return _prune_width(name, method, adapter, calibration, device, progress)
    blocks = config.blocks(adapter.num_layers)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    start = time.perf_counter()
    try:
        if impl.needs_calibration:
            if calibration is None:
                raise PrunekitError(f"method {name} needs calibration data")
            ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
            visitor = method if len(blocks) == adapter.num_layers else OnlyBlocks(method, blocks)
            LayerwiseEngine(adapter, device, progress=progress).run(ids, visitor, desc=name)
        else:
            with torch.no_grad():
                for i in tqdm(blocks, desc=name, unit="block", disable=None if progress else True):
                    block = adapter.layers[i].to(device)
                    method.edit(i, block)
                    adapter.layers[i] = block.to("cpu")
    finally:
        model.config.use_cache = use_cache
    seconds = time.perf_counter() - start
    return PruneResult(name, config.to_dict(), seconds, sparsity_stats(adapter, blocks), method.events, method.summary(),
                       model)


def _prune_depth(name, method, adapter: ModelAdapter, calibration, device, progress) -> PruneResult:
    """Depth methods score candidates with whole-stack calibration forwards, then the model's
    decoder is replaced by the resulting (fewer) blocks."""
    from .methods.depth.base import DepthState
    from .methods.depth.stack import BlockStack

    if calibration is None:
        raise PrunekitError(f"method {name} needs calibration data")
    ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
    model = adapter.model
    before = adapter.num_layers
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    start = time.perf_counter()
    try:
        state = DepthState(adapter)
        stack = BlockStack(adapter, ids, device)
        method.run(stack, state, progress)
        state.install()
    finally:
        model.config.use_cache = use_cache
    seconds = time.perf_counter() - start
    depth = {"layers_before": before, "layers_after": adapter.num_layers,
             "layers_removed": before - adapter.num_layers, "groups": state.groups,
             "block_forwards": stack.forwards}
    details = {**method.summary(), "depth": depth}
    return PruneResult(name, method.config.to_dict(), seconds, sparsity_stats(adapter), method.events, details, model)


def _prune_width(name, method, adapter: ModelAdapter, calibration, device, progress) -> PruneResult:
    """Width methods search and reform on the dense model (left masked), then return a new,
    physically smaller model in result.model."""
    if calibration is None:
        raise PrunekitError(f"method {name} needs calibration data")
    ids = calibration.input_ids if isinstance(calibration, Calibration) else calibration
    model = adapter.model
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    start = time.perf_counter()
    try:
        small = method.run(ids, device, progress)
    finally:
        model.config.use_cache = use_cache
    seconds = time.perf_counter() - start
    return PruneResult(name, method.config.to_dict(), seconds, sparsity_stats(ModelAdapter(small)), method.events,
                       method.summary(), small)
