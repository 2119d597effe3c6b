"""prunekit.recover(model, RecoveryConfig(...), data=..., output=...): recovery of a pruned model
by LoRA (merged) or by training block weights, on the lm loss or by distillation from the dense
teacher, optionally after local distillation of every changed block; saved and loaded like any
prunekit output, every zero kept."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.sources import default_data_dir
from ..errors import PrunekitError
from ..reports.lineage import extend as extend_lineage
from ..models.adapter import ModelAdapter
from ..models.paths import check_output_apart
from ..stats import sparsity_stats
from .config import CHANGED, RecoveryConfig
from .data import build_training_data, refuse_evaluation_data
from ..engine.block_training import guard_zeros
from .full import keep_zeros_callback, set_trainable, trained_masks
from .local import LOCAL_FILE, changed_blocks, dense_spans
from .lora import attach_lora, lora_layers, mask_adapters, merge_lora, zero_patterns
from .output import CHECKPOINTS, open_work_dir, publish
from .sparsity import nm_validity
from .teacher import load_teacher
from .train import Examples, last_checkpoint, pad_collator, train_model, training_arguments

LOSS_PLOT = "recovery_loss.png"


@dataclass
class RecoveryResult:
    model: object                 # the merged model (the PeftModel when keep_adapter)
    config: dict
    data: dict
    history: dict                 # {"train": [{step, loss, lr}], "validation": [{step, loss}]}
    steps: int
    tokens_seen: int
    seconds: float
    peak_memory_gb: float
    merge: str                    # "masked" | "dense" | "adapter kept"
    validation_loss_merged: float | None
    sparsity_before: dict
    sparsity_after: dict
    nm_valid: dict                # pattern -> {"before": bool, "after": bool}
    report: dict = field(default_factory=dict)
    output: str | None = None


def _peak_memory_gb(device: str) -> float:
    from ..reports.summary import peak_rss_gb
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1024 ** 3
    return peak_rss_gb()


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrunekitError(f"device {device} requested but CUDA is not available")
    if device.startswith("cuda:") and device != "cuda:0":
        raise PrunekitError(f"device {device}: the trainer uses the first visible GPU; select it with "
                            f"CUDA_VISIBLE_DEVICES and pass --device cuda")


def _prior_report(spec: str | None) -> dict | None:
    p = Path(spec) / "prunekit_report.json" if spec else None
    return json.loads(p.read_text()) if p is not None and p.is_file() else None


def _load(model_or_path, tokenizer, dtype, trust_remote_code, source, report=None):
    """(model, tokenizer, ModelSource or None, the folder's earlier prunekit report or None)."""
    if not isinstance(model_or_path, (str, Path)):
        if tokenizer is None:
            raise PrunekitError("recover() of a model object needs its tokenizer")
        return model_or_path, tokenizer, source, report or _prior_report(source.spec if source else None)
    from ..models.loading import load_model
    model, tok, source = load_model(str(model_or_path), dtype, trust_remote_code)
    return model, tokenizer or tok, source, _prior_report(str(model_or_path))


def _merged_validation_loss(model, data, config, tokenizer) -> float:
    """The held-out loss of the merged model, computed as the Trainer computed it during training."""
    from transformers import Trainer

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(config, Path(tmp), progress=False, eval_on_start=False)
        trainer = Trainer(model=model, args=args, eval_dataset=Examples(data.validation),
                          data_collator=pad_collator(pad_id))
        return trainer.evaluate()["eval_loss"]


def _run_options(config: RecoveryConfig, data: str, model_spec: str) -> dict:
    opts = {k: v for k, v in config.to_dict().items() if k not in ("resume", "device")}
    return {**opts, "data": data, "model": model_spec}


def recover(model_or_path, config: RecoveryConfig | None = None, data: str = "c4", output: str | None = None,
            tokenizer=None, data_dir: str | None = None, overwrite: bool = False, trust_remote_code: bool = False,
            dtype: str = "float32", progress: bool = True, measure=None, callbacks=(), source=None,
            teacher=None, report: dict | None = None) -> RecoveryResult:
    """Fine-tune LoRA adapters (merged after) or block weights on `data`, zeros kept; save to
    `output` if given. `teacher` (a spec or a loaded model) overrides config.teacher for kd and
    --local; without either, the dense source of the input's lineage teaches. `report` is the
    prunekit report a model object came with (a folder's own is read from it).

    `model_or_path` is a model spec (folder, hub id, alias) or a loaded model, changed in place,
    with its `tokenizer` (and, for the report, the ModelSource it came from). `measure(model) ->
    dict` runs on the recovered model before saving; its result goes into the report (the CLI
    evaluates perplexity there). `callbacks` are extra transformers TrainerCallbacks."""
    config = config or RecoveryConfig()
    _check_device(config.device)
    refuse_evaluation_data(data, data_dir or default_data_dir())
    if config.resume and not output:
        raise PrunekitError("--resume needs the output folder of the interrupted run")
    spec = str(model_or_path) if isinstance(model_or_path, (str, Path)) else \
        (source.spec if source else type(model_or_path).__name__)
    if output and (isinstance(model_or_path, (str, Path)) or source is not None):
        check_output_apart(output, model=spec)
    work = open_work_dir(output, _run_options(config, data, spec), overwrite, config.resume) if output else None
    scratch = None if work else tempfile.TemporaryDirectory(prefix="prunekit-recover-")
    folder = work or Path(scratch.name)
    try:
        model, tok, source, prior = _load(model_or_path, tokenizer, dtype, trust_remote_code, source, report)
        result = _recover_loaded(model, tok, config, data, data_dir, folder, progress, measure, callbacks,
                                 source, prior, spec, teacher, dtype, trust_remote_code)
        if work:
            result.report["output"] = str(output)
            _write_outputs(result, tok, work)
            result.output = str(publish(work, output))
    except BaseException as e:
        if work and not last_checkpoint(work / CHECKPOINTS) and not (work / LOCAL_FILE).is_file():
            shutil.rmtree(work, ignore_errors=True)      # nothing to resume: leave no folder behind
        elif work and isinstance(e, KeyboardInterrupt):
            e.resumable = str(work)      # kept for --resume: the command line says where, and how to go on
        raise
    finally:
        if scratch:
            scratch.cleanup()
    return result


def _recover_loaded(model, tok, config, data_spec, data_dir, folder: Path, progress, measure, callbacks, source,
                    prior, spec, teacher=None, dtype="float32", trust_remote_code=False) -> RecoveryResult:
    start = time.perf_counter()
    adapter = ModelAdapter(model)
    targets = config.target_names(adapter.linear_names())
    blocks = config.trained_blocks(adapter.num_layers)      # a bad --train fails before the data is read
    data = build_training_data(data_spec, tok, config, data_dir)
    weights = adapter.linear_names() if config.full_training or config.local != "off" else targets
    masks = zero_patterns(model, weights) if config.keep_zeros else {}
    sparsity_before, nm_before = sparsity_stats(adapter), nm_validity(adapter)
    section = _model_section(model, source, spec, adapter)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    teacher_model, teacher_name = _teacher(config, teacher, model, tok, prior, source, spec, dtype, trust_remote_code)
    if config.train == CHANGED:
        blocks = changed_blocks(model, teacher_model, dense_spans(prior, adapter.num_layers,
                                                                  ModelAdapter(teacher_model).num_layers))
        if not blocks:
            raise PrunekitError("--train blocks:changed: every block equals the dense block it stands for")
    local = _local_phase(model, teacher_model, data, config, masks, prior, folder, progress) \
        if config.local != "off" else None
    data, global_teacher, cached_s = _global_teacher(teacher_model, model, data, config, progress)
    del teacher_model              # a cached or local-only teacher is released before training
    recovered, run, trainable, masked_training, merge = _train(model, tok, data, config, blocks, targets, masks,
                                                               folder, progress, callbacks, global_teacher)
    del global_teacher
    if cached_s is not None:
        run["teacher_s"], run["teacher_mode"] = cached_s, "top-k summaries cached before training"
    merged_loss = None if config.keep_adapter else _merged_validation_loss(recovered, data, config, tok)
    recovered.config.use_cache = use_cache
    if config.keep_adapter:      # the base weights are untouched: the adapter is applied at load time
        sparsity_after, nm_after = sparsity_before, nm_before
    else:
        after = ModelAdapter(recovered)
        section = _model_section(recovered, source, spec, after)
        sparsity_after, nm_after = sparsity_stats(after), nm_validity(after)
    result = RecoveryResult(
        model=recovered, config=config.to_dict(), data=data.info, history=run["history"], steps=run["steps"],
        tokens_seen=run["tokens_seen"], seconds=time.perf_counter() - start,
        peak_memory_gb=_peak_memory_gb(config.device), merge=merge, validation_loss_merged=merged_loss,
        sparsity_before=sparsity_before, sparsity_after=sparsity_after,
        nm_valid={p: {"before": nm_before[p], "after": v} for p, v in nm_after.items()})
    result.report = _report(result, run, targets if blocks is None else weights, trainable, len(masks),
                            masked_training, section, prior, spec)
    result.report["recovery"].update(_distillation_section(config, teacher_name, run, local),
                                     trained_blocks=blocks)
    if measure is not None:
        result.report.update(measure(recovered))
    result.report["lineage"] = extend_lineage(prior, result.report, section)   # the stages so far, then recovery
    return result


def _teacher(config, teacher, model, tok, prior, source, spec, dtype, trust_remote_code):
    """(teacher model, its name), or (None, None) when the run needs none."""
    if not config.needs_teacher:
        return None, None
    return load_teacher(teacher if teacher is not None else config.teacher, model, tok, prior,
                        source_path(source, spec), dtype, trust_remote_code)


def _global_teacher(teacher, model, data, config, progress):
    """(data, the teacher the Trainer runs online or None, seconds of the cached top-k pass or None)."""
    if teacher is None or config.local == "only" or config.loss == "lm":
        return data, None, None
    vocab = model.get_output_embeddings().weight.shape[0]
    if 0 < config.kd_topk < vocab and config.loss != "lm":
        data, seconds = _cached_teacher(teacher, data, config, progress)
        return data, None, seconds
    return data, teacher, None


def _train(model, tok, data, config, blocks, targets, masks, folder, progress, callbacks, teacher):
    """(recovered model, run, trainable parameters, masked linears, merge) of the global phase."""
    if config.local == "only":
        return model, _no_training(), 0, 0, "local only"
    if blocks is not None:
        return _train_full(model, tok, data, config, blocks, masks, folder, progress, callbacks, teacher)
    return _train_lora(model, tok, data, config, targets, masks, folder, progress, callbacks, teacher)


def source_path(source, spec) -> str | None:
    """What the student was loaded from, for refusing it as its own teacher."""
    return source.spec if source is not None else (spec if Path(str(spec)).exists() else None)


def _cached_teacher(teacher, data, config, progress):
    """The training data with the teacher's top-k summaries, and the seconds it took."""
    from .data import TrainingData
    from .distill import cache_teacher

    start = time.perf_counter()
    teacher.to(torch.device(config.device))
    rows = [cache_teacher(teacher, part, config.temperature, config.kd_topk, config.device, progress)
            for part in (data.train, data.validation)]
    teacher.to("cpu")
    return TrainingData(rows[0], rows[1], data.info), time.perf_counter() - start


def _no_training() -> dict:
    return {"history": {"train": [], "validation": []}, "steps": 0, "epochs": 0, "tokens_seen": 0,
            "tokens_this_run": 0, "train_s": 0.0, "resumed_from": None, "teacher_s": None}


def _train_lora(model, tok, data, config, targets, masks, folder, progress, callbacks, teacher):
    torch.manual_seed(config.seed)           # the adapters' initialisation
    peft_model = attach_lora(model, config, targets)
    masked_training = mask_adapters(peft_model, masks) if masks and config.masked_training else 0
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    run = train_model(peft_model, tok, data, config, folder / CHECKPOINTS, config.resume, progress, callbacks, teacher,
                      distill=config.loss != "lm")
    peft_model.eval()
    if config.keep_adapter:
        return peft_model, run, trainable, masked_training, "adapter kept"
    adapted = {n for n in lora_layers(peft_model)}
    return merge_lora(peft_model, masks), run, trainable, masked_training, \
        "masked" if any(n in adapted for n in masks) else "dense"


def _train_full(model, tok, data, config, blocks, masks, folder, progress, callbacks, teacher):
    trainable = set_trainable(model, blocks)
    guarded = trained_masks(model, blocks, masks)
    handles = guard_zeros(guarded)
    try:
        run = train_model(model, tok, data, config, folder / CHECKPOINTS, config.resume, progress,
                          [*callbacks, keep_zeros_callback(guarded)], teacher, distill=config.loss != "lm")
    finally:
        for h in handles:
            h.remove()
        model.requires_grad_(False)
    model.eval()
    name = config.train if config.train != CHANGED else f"blocks:{','.join(map(str, blocks))} (changed)"
    merge = f"{name}, " + ("zeros kept" if guarded else "no zeros")
    return model, run, trainable, len(guarded), merge


def _local_phase(model, teacher, data, config, masks, prior, folder: Path, progress) -> dict:
    """Local distillation, or on --resume the saved result of the interrupted run's."""
    from safetensors.torch import load_file, save_file
    from .local import distill_locally

    saved, summary = folder / LOCAL_FILE, folder / (LOCAL_FILE + ".json")
    layers = ModelAdapter(model).layers
    if config.resume and saved.is_file() and summary.is_file():
        state = load_file(saved)
        for s in {int(k.split(".", 1)[0]) for k in state}:
            layers[s].load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(s)})
        return {**json.loads(summary.read_text()), "reused": True}
    section = distill_locally(model, teacher, data, config, masks, prior, config.device, progress)
    state = {f"{s}.{k}": v.detach().cpu().contiguous() for s in section["changed_blocks"]
             for k, v in layers[s].state_dict().items()}
    save_file(state, saved)
    summary.write_text(json.dumps(section))
    return section


def _distillation_section(config, teacher_name, run, local) -> dict:
    teacher_s, mode = run.get("teacher_s"), run.get("teacher_mode", "online, on every batch")
    cached = mode != "online, on every batch"
    total = run["train_s"] + ((teacher_s or 0) if cached else 0)
    return {"loss": config.loss, "train": config.train, "teacher": teacher_name, "teacher_s": teacher_s,
            "teacher_mode": mode if teacher_s is not None else None,
            "teacher_share": teacher_s / total if teacher_s is not None and total else None, "local": local}


def _model_section(model, source, spec, adapter) -> dict:
    from ..reports import summary as rep
    return rep.model_section(model, source, adapter) if source else {"source": spec}


def _report(result: RecoveryResult, run: dict, targets, trainable, masked, masked_training, section, prior,
            spec) -> dict:
    from ..reports import summary as rep

    if prior:   # keep the dense origin as the model's source (bench and kl compare against it)
        section["source"] = prior.get("model", {}).get("source", section["source"])
    recovery = {
        "config": result.config, "data": result.data, "targets": targets, "trainable_params": trainable,
        "steps": result.steps, "epochs": run["epochs"], "tokens_seen": result.tokens_seen,
        "tokens_this_run": run["tokens_this_run"],
        "wall_s": result.seconds, "train_s": run["train_s"], "resumed_from": run["resumed_from"],
        "peak_memory_gb": result.peak_memory_gb,
        "peak_memory_kind": "cuda allocated" if result.config["device"].startswith("cuda") else "process RSS",
        "merge": result.merge, "masked_linears": masked,
        "masked_training_linears": masked_training,
        "validation_loss_merged": result.validation_loss_merged, "history": result.history,
        "nm_valid": result.nm_valid, "sparsity_before": result.sparsity_before["overall"],
    }
    report = {"command": "recover", "model": section, "recovered_from": spec,
              "method": (prior or {}).get("method"), "calibration": (prior or {}).get("calibration"),
              "sparsity": result.sparsity_after, "recovery": recovery,
              "before_recovery": prior, "environment": rep.environment(result.config["device"])}
    return report


def _write_outputs(result: RecoveryResult, tokenizer, work: Path) -> None:
    from ..export.save import REPORT_NAME, write_json
    from ..reports.lineage import recovery_label
    from .plot import plot_local, plot_losses

    result.model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    title = f"{recovery_label(result.config)} recovery of {result.report['recovered_from']}"
    local = result.report["recovery"].get("local")
    if result.steps == 0 and local:
        plot_local(local, work / LOSS_PLOT, f"{title}\n{local['windows']} windows of {local['seqlen']} tokens")
    else:
        plot_losses(result.history, work / LOSS_PLOT,
                    f"{title}\n{result.data['dataset']}, {result.tokens_seen:,} tokens, {result.steps} steps")
    write_json(work / REPORT_NAME, result.report)
