"""Prune a checkpoint larger than memory: blocks are read from its safetensors when needed,
pruned by the same layer-wise engine and visitors as in memory, written to the output at once,
and freed. Host memory holds the embeddings, the head, one block and the calibration
activations (plus the method's statistics: Hessians for SparseGPT, auxiliaries for SparseLLM).

Layer-wise methods (magnitude, wanda, sparsegpt, sparsellm) read every block once. Depth methods
that only remove blocks stream their scoring passes through a BlockStack whose blocks are
loaded per forward: ShortGPT reads each block once, SLEB and PPL re-read the blocks after each
candidate (about k * n^2 / 2 and n^2 / 2 block reads); then the kept blocks are copied to the
output with renumbered keys. Merging methods (laco, slm) and the width search refuse: they
build new blocks from several at once or search over the whole model.
"""
from __future__ import annotations

import copy
import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from ..api import PruneResult
from ..data.calibration import Calibration, checked_calibration_ids, input_vocab_size
from ..engine import LayerwiseEngine
from ..errors import PrunekitError
from ..methods.depth.base import DepthMethod
from ..methods.options import check_types
from ..methods.registry import all_methods, method_for
from ..methods.sparsity.base import OnlyBlocks
from ..models.adapter import ModelAdapter
from ..models.paths import check_output_apart
from ..models.variable_width import keep_layers
from .checkpoint import StreamedModel
from .runstate import RunState
from .writer import Lazy, ShardWriter

DEFAULT_SHARD_BYTES = 1 << 30
METHOD_STATE = ("events", "cholesky_retries", "history")   # counters a resumed run must carry over


def _digest(ids: torch.Tensor | None) -> str | None:
    return None if ids is None else hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()[:16] + \
        f"/{tuple(ids.shape)}"


class _Run:
    """One streamed pruning run: the model, the output writer and the run state together."""

    def __init__(self, sm: StreamedModel, adapter: ModelAdapter, run: RunState, writer: ShardWriter,
                 on_unit: Callable[[int], None] | None):
        self.sm, self.adapter, self.run, self.writer, self.on_unit = sm, adapter, run, writer, on_unit
        self.layers_path = adapter.spec.layers_path
        self.results = run.results.setdefault("sparsity", {})

    def path(self, i: int) -> str:
        return f"{self.layers_path}.{i}"

    def load(self, i: int) -> None:
        self.sm.load(self.path(i))

    def record_sparsity(self, i: int, block) -> None:
        for name, lin in self.adapter.block_linears(block).items():
            w = lin.weight
            self.results[f"layers.{i}.{name}"] = [w.numel() - int(torch.count_nonzero(w)), w.numel()]

    def write_block(self, new_index: int, tensors: dict) -> None:
        prefix = f"{self.path(new_index)}."
        self.writer.add(f"block-{new_index:05d}", {prefix + k: v.detach().cpu() for k, v in tensors.items()})

    def finish_unit(self, finished: int, payload=None) -> None:
        self.run.save(finished, self.writer.state(), payload)
        self.writer.collect_garbage()
        if self.on_unit is not None:
            self.on_unit(finished - 1)

    def write_rest(self) -> None:
        """The non-block tensors (embeddings, final norm, head; a tied head once), copied from the
        checkpoint one tensor at a time after the loaded ones are freed."""
        block_prefix = self.layers_path + "."
        # named before the release, which unties the twins: a tied head must be named once
        rest = {}
        for n, p in self.sm.model.named_parameters():
            if not n.startswith(block_prefix) and not any(t in rest for t in self.sm.twins.get(n, ())):
                rest[n] = Lazy(tuple(p.shape), self.sm.dtype, partial(self.sm.read, n))
        for n in self.sm.buffer_keys:
            if not n.startswith(block_prefix):
                rest[n] = self.sm.read_state(n)
        for m in self.adapter.pre_block_modules() + self.adapter.post_block_modules():
            self.sm.release(self.sm.module_path(m))
        self.writer.add("rest", rest)


def _method_state(method) -> dict:
    return {k: copy.deepcopy(getattr(method, k)) for k in METHOD_STATE if hasattr(method, k)}


def stream_prune(model: str, config, calibration: Calibration | torch.Tensor | None, output: str | Path, *,
                 device: str = "cpu", dtype: str | torch.dtype = "auto", resume: bool = False,
                 overwrite: bool = False, max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True,
                 trust_remote_code: bool = False, on_unit: Callable[[int], None] | None = None,
                 extra: Callable[[Path], None] | None = None) -> PruneResult:
    """Prune the checkpoint `model` (local folder or hub id, safetensors) into the checkpoint folder
    `output` without holding the model in memory. `resume` continues an interrupted run with the same
    settings; `extra(folder)` may add files (a report) before the output is moved into place.
    `on_unit(k)` is called after unit k (a block) is durably written."""
    check_output_apart(output, model=model)
    check_types(config)       # fields may have been changed after construction
    impl = method_for(config)
    name = impl.name
    if not impl.streamable:
        raise PrunekitError(f"method {name} cannot stream: it builds blocks from several blocks or searches the "
                            f"whole model; streamable methods: "
                            + ", ".join(n for n, c in all_methods().items() if c.streamable))
    if impl.needs_calibration() and calibration is None:
        raise PrunekitError(f"method {name} needs calibration data")
    sm = StreamedModel(model, dtype, trust_remote_code)
    adapter = ModelAdapter(sm.model)
    method = impl(config, adapter)
    method.check()
    ids = checked_calibration_ids(calibration, input_vocab_size(sm.model)) if impl.needs_calibration() else None
    settings = {"model": sm.source.path, "method": name, "config": config.to_dict(), "dtype": str(sm.dtype),
                "device": str(device), "max_shard_bytes": max_shard_bytes,
                "calibration": _digest(ids) if impl.needs_calibration() else None}
    run = RunState(Path(output), settings, resume, overwrite)
    try:
        return _execute(sm, adapter, method, run, ids, device, progress, max_shard_bytes, on_unit, extra,
                        trust_remote_code)
    except KeyboardInterrupt as e:
        e.resumable = str(run.folder)    # kept for --resume: the command line says where, and how to go on
        raise


def _execute(sm, adapter, method, run: RunState, ids, device, progress, max_shard_bytes, on_unit, extra,
             trust_remote_code) -> PruneResult:
    impl, config = type(method), method.config
    name, depth = impl.name, issubclass(impl, DepthMethod)
    writer = ShardWriter(run.folder, max_shard_bytes, run.data["writer"])
    writer.forget_unlisted()
    run.drop_stale()
    r = _Run(sm, adapter, run, writer, on_unit)
    if depth:       # scoring passes may need the head; layer-wise pruning loads the embeddings only to start
        for m in adapter.pre_block_modules() + adapter.post_block_modules():
            sm.load(sm.module_path(m))
    start = time.perf_counter()
    if depth:
        details, layers = _depth(r, method, ids, device, progress)
    else:
        _layerwise(r, method, impl, config, ids, device, progress)
        details, layers = method.summary(), adapter.num_layers
    if run.finished == layers:        # the non-block tensors are the last unit
        r.write_rest()
        r.finish_unit(layers + 1)
    seconds = time.perf_counter() - start
    writer.finish()
    _write_metadata(sm, run.folder, layers, run.results.get("kept"), trust_remote_code)
    if extra is not None:
        extra(run.folder)
    run.complete()
    return PruneResult(name, config.to_dict(), seconds, _sparsity(r.results),
                       run.notes + getattr(method, "events", []), {**details, "streamed": True}, None)


def _layerwise(r: _Run, method, impl, config, ids, device, progress) -> None:
    n = r.adapter.num_layers
    blocks = config.blocks(n)
    payload = r.run.payload()
    if payload is not None:
        torch.set_rng_state(payload["rng"])
        for k, v in payload["method"].items():
            setattr(method, k, v)
    if r.run.finished >= n:
        return

    def release(i, inputs=None):
        block = r.adapter.layers[i]
        if i in blocks:
            r.record_sparsity(i, block)
        r.write_block(i, block.state_dict())
        r.sm.release(r.path(i))
        hidden = None if inputs is None else inputs.hidden
        r.finish_unit(i + 1, {"hidden": hidden, "rng": torch.get_rng_state(), "method": _method_state(method)})

    model_cfg = r.sm.model.config
    if not impl.needs_calibration():
        with torch.no_grad():
            for i in range(r.run.finished, n):
                r.load(i)
                block = r.adapter.layers[i].to(device)
                if i in blocks:
                    method.edit(i, block)
                r.adapter.layers[i] = block.to("cpu")
                release(i)
        return
    visitor = method if len(blocks) == n else OnlyBlocks(method, blocks)
    engine = LayerwiseEngine(r.adapter, device, progress=progress)
    inputs = _capture(r, engine, ids)
    if payload is not None:
        inputs.hidden = payload["hidden"]   # the kwargs are recomputed; the activations come from disk
    model_cfg.use_cache = False
    engine.run(ids, visitor, desc=f"{impl.name} (streamed)", start=r.run.finished, inputs=inputs,
               load_block=r.load, release_block=release)


def _capture(r: _Run, engine, ids):
    """Block 0's inputs and every block's kwargs; the embeddings are freed at once, since
    layer-wise pruning never needs them again (their memory goes to the blocks)."""
    paths = [r.sm.module_path(m) for m in r.adapter.pre_block_modules()]
    for p in paths:
        r.sm.load(p)
    try:
        return engine.capture(ids)
    finally:
        for p in paths:
            r.sm.release(p)


def _depth(r: _Run, method, ids, device, progress):
    from ..methods.depth.base import DepthState
    from .stack import StreamedStack

    n = r.adapter.num_layers
    kept = r.run.results.get("kept")
    details = r.run.results.get("depth_details")
    if kept is None:
        stack = StreamedStack(r.adapter, ids, device, r.load, lambda i: r.sm.release(r.path(i)))
        state = DepthState(r.adapter)
        method.search(stack, state, progress)
        kept = [g[0] for g in state.groups]
        details = {**method.summary(), "depth": {"layers_before": n, "layers_after": len(kept),
                                                 "layers_removed": n - len(kept), "groups": state.groups,
                                                 "block_forwards": stack.forwards}}
        r.run.results["kept"], r.run.results["depth_details"] = kept, details
        r.run.save(0, r.writer.state())
    for new in range(r.run.finished, len(kept)):
        j = kept[new]
        tensors = {local: r.sm.read_state(f"{r.path(j)}.{local}") for local in r.sm.state_names(r.path(j))}
        for name in r.adapter.linear_names():
            w = tensors[f"{name}.weight"]
            r.results[f"layers.{new}.{name}"] = [w.numel() - int(torch.count_nonzero(w)), w.numel()]
        r.write_block(new, tensors)
        r.finish_unit(new + 1)
    return details, len(kept)


def _write_metadata(sm: StreamedModel, folder: Path, layers: int, kept, trust_remote_code: bool) -> None:
    """config (dtype, depth), generation config and tokenizer next to the shards."""
    from transformers import AutoTokenizer, GenerationConfig

    cfg = copy.deepcopy(sm.config)
    cfg.dtype = sm.dtype
    if kept is not None:
        keep_layers(cfg, kept)
    cfg.save_pretrained(folder)
    try:
        GenerationConfig.from_pretrained(sm.source.path).save_pretrained(folder)
    except OSError:
        pass   # the checkpoint has none
    try:
        AutoTokenizer.from_pretrained(sm.source.path, trust_remote_code=trust_remote_code).save_pretrained(folder)
    except Exception as e:
        raise PrunekitError(f"model '{sm.source.spec}' has no usable tokenizer: {str(e).splitlines()[0]}") from e


def _sparsity(results: dict) -> dict:
    """The in-memory report's sparsity figures, from the zero counts taken as each block was written."""
    per_layer = {k: z / t for k, (z, t) in results.items()}
    zeros = sum(z for z, _ in results.values())
    numel = sum(t for _, t in results.values())
    return {"overall": zeros / numel if numel else 0.0, "per_layer": per_layer}
