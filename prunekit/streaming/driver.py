"""Prune a checkpoint larger than memory: the method's own `run` drives itself over a streamed
block source (`blocks.StreamedBlocks`), which reads each block from the safetensors when needed
and writes it to the output as soon as it is final. Host memory holds the embeddings, the head,
one block and the calibration activations (plus the method's statistics: Hessians for SparseGPT,
auxiliaries for SparseLLM).

Layer-wise methods (magnitude, wanda, sparsegpt, sparsellm) read every block once. Depth methods
that only remove blocks stream their scoring passes through a BlockStack whose blocks are
loaded per forward: ShortGPT reads each block once, SLEB and PPL re-read the blocks after each
candidate (about k * n^2 / 2 and n^2 / 2 block reads); then the kept blocks are copied to the
output with renumbered keys. A method declares whether it can run this way (`streamable`);
merging methods (laco, slm) and the searches cannot: they build new blocks from several at once
or search over the whole model.
"""
from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Callable

import torch

from ..api import PruneResult
from ..data.calibration import Calibration, checked_calibration_ids, input_vocab_size
from ..errors import PrunekitError
from ..methods.base import Job
from ..methods.options import check_types
from ..methods.registry import all_methods, method_for
from ..models.adapter import ModelAdapter
from ..models.paths import check_output_apart
from ..models import decilm
from ..models.variable_width import keep_layers
from .blocks import StreamedBlocks
from .checkpoint import StreamedModel
from .runstate import RunState
from .writer import ShardWriter

DEFAULT_SHARD_BYTES = 1 << 30


def _digest(ids: torch.Tensor | None) -> str | None:
    return None if ids is None else hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()[:16] + \
        f"/{tuple(ids.shape)}"


def stream_prune(model: str | StreamedModel, config, calibration: Calibration | torch.Tensor | None,
                 output: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "auto", resume: bool = False,
                 overwrite: bool = False, max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True,
                 trust_remote_code: bool = False, on_unit: Callable[[int], None] | None = None,
                 extra: Callable[[Path], None] | None = None, tokenizer=None) -> PruneResult:
    """Prune the checkpoint `model` (local folder or hub id, safetensors; or a StreamedModel already
    opened on it) into the checkpoint folder `output` without holding the model in memory. `resume`
    continues an interrupted run with the same settings; `extra(folder)` may add files (a report)
    before the output is moved into place. `on_unit(k)` is called after unit k (a block) is durably
    written. The output gets `tokenizer`, by default the checkpoint's own."""
    spec = model.source.spec if isinstance(model, StreamedModel) else model
    check_output_apart(output, model=spec)
    check_types(config)       # fields may have been changed after construction
    impl = method_for(config)
    name = impl.name
    if not impl.streamable:
        raise PrunekitError(f"method {name} cannot stream: it builds blocks from several blocks or searches the "
                            f"whole model; streamable methods: "
                            + ", ".join(n for n, c in all_methods().items() if c.streamable))
    why = impl.cannot_stream(config)
    if why:
        raise PrunekitError(f"cannot stream: {why}")
    if impl.needs_calibration() and calibration is None:
        raise PrunekitError(f"method {name} needs calibration data")
    sm = model if isinstance(model, StreamedModel) else StreamedModel(model, dtype, trust_remote_code)
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
                        tokenizer or _tokenizer(sm, trust_remote_code))
    except KeyboardInterrupt as e:
        e.resumable = str(run.folder)    # kept for --resume: the command line says where, and how to go on
        raise


def _execute(sm, adapter, method, run: RunState, ids, device, progress, max_shard_bytes, on_unit, extra,
             tokenizer) -> PruneResult:
    """The method's own run over blocks read from the checkpoint and written as they finish."""
    writer = ShardWriter(run.folder, max_shard_bytes, run.data["writer"])
    writer.forget_unlisted()
    run.drop_stale()
    blocks = StreamedBlocks(sm, adapter, run, writer, method, on_unit)
    blocks.resume()
    start = time.perf_counter()
    method.run(Job(ids, device, progress, blocks))
    blocks.write_rest()
    seconds = time.perf_counter() - start
    writer.finish()
    _write_metadata(sm, run.folder, run.results.get("kept"), tokenizer, run.results.get("shapes"), adapter)
    if extra is not None:
        extra(run.folder)
    run.complete()
    return PruneResult(method.name, method.config.to_dict(), seconds, _sparsity(blocks.results),
                       run.notes + method.events, {**method.summary(), "streamed": True}, None)


def _tokenizer(sm: StreamedModel, trust_remote_code: bool):
    """The checkpoint's tokenizer, read before any work: an output without one is no checkpoint."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(sm.source.path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise PrunekitError(f"model '{sm.source.spec}' has no usable tokenizer: {str(e).splitlines()[0]}") from e


def _write_metadata(sm: StreamedModel, folder: Path, kept, tokenizer, shapes=None, adapter=None) -> None:
    """config (dtype, depth; the DeciLM layout's with the code it names when blocks lost a
    sublayer), generation config and tokenizer next to the shards."""
    from transformers import GenerationConfig

    if shapes is not None:
        cfg = decilm.decilm_config(adapter, [decilm.BlockShape(*s) for s in shapes])
        cfg.dtype = sm.dtype
        decilm.save_config(cfg, folder)
    else:
        cfg = copy.deepcopy(sm.config)
        cfg.dtype = sm.dtype
        if kept is not None:
            keep_layers(cfg, kept)
        cfg.save_pretrained(folder)
        _copy_code(cfg, Path(sm.source.path), folder)
    try:
        GenerationConfig.from_pretrained(sm.source.path).save_pretrained(folder)
    except OSError:
        pass   # the checkpoint has none
    tokenizer.save_pretrained(folder)


def _copy_code(cfg, source: Path, folder: Path) -> None:
    """The modeling files the config's auto_map names (a width-pruned or DeciLM input's), copied
    from the input: the output must load on its own, as the input does."""
    import shutil
    for ref in (getattr(cfg, "auto_map", None) or {}).values():
        for name in ([ref] if isinstance(ref, str) else ref):
            if name:
                module = name.split("--")[-1].split(".")[0] + ".py"
                if (source / module).is_file() and not (Path(folder) / module).exists():
                    shutil.copy(source / module, Path(folder) / module)


def _sparsity(results: dict) -> dict:
    """The in-memory report's sparsity figures, from the zero counts taken as each block was written."""
    per_layer = {k: z / t for k, (z, t) in results.items()}
    zeros = sum(z for z, _ in results.values())
    numel = sum(t for _, t in results.values())
    return {"overall": zeros / numel if numel else 0.0, "per_layer": per_layer}
