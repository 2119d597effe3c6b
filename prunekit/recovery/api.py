"""prunekit.recover(model, RecoveryConfig(...), data=..., output=...): LoRA recovery of a pruned
model, merged so that it is saved and loaded like any prunekit output."""
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
from .config import RecoveryConfig
from .data import build_training_data, refuse_evaluation_data
from .lora import attach_lora, mask_adapters, merge_lora, zero_patterns
from .output import CHECKPOINTS, open_work_dir, publish
from .sparsity import nm_validity
from .train import Examples, last_checkpoint, pad_collator, train_lora, training_arguments

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


def _load(model_or_path, tokenizer, dtype, trust_remote_code, source):
    """(model, tokenizer, ModelSource or None, the folder's earlier prunekit report or None)."""
    if not isinstance(model_or_path, (str, Path)):
        if tokenizer is None:
            raise PrunekitError("recover() of a model object needs its tokenizer")
        return model_or_path, tokenizer, source, _prior_report(source.spec if source else None)
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
            dtype: str = "float32", progress: bool = True, measure=None, callbacks=(), source=None) -> RecoveryResult:
    """Fine-tune LoRA adapters on `data` and merge them (zeros kept); save to `output` if given.

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
        model, tok, source, prior = _load(model_or_path, tokenizer, dtype, trust_remote_code, source)
        result = _recover_loaded(model, tok, config, data, data_dir, folder, progress, measure, callbacks,
                                 source, prior, spec)
        if work:
            result.report["output"] = str(output)
            _write_outputs(result, tok, work)
            result.output = str(publish(work, output))
    except BaseException as e:
        if work and not last_checkpoint(work / CHECKPOINTS):
            shutil.rmtree(work, ignore_errors=True)      # nothing to resume: leave no folder behind
        elif work and isinstance(e, KeyboardInterrupt):
            e.resumable = str(work)      # kept for --resume: the command line says where, and how to go on
        raise
    finally:
        if scratch:
            scratch.cleanup()
    return result


def _recover_loaded(model, tok, config, data_spec, data_dir, folder: Path, progress, measure, callbacks, source,
                    prior, spec) -> RecoveryResult:
    start = time.perf_counter()
    adapter = ModelAdapter(model)
    targets = config.target_names(adapter.linear_names())
    data = build_training_data(data_spec, tok, config, data_dir)
    masks = zero_patterns(model, targets) if config.keep_zeros else {}
    sparsity_before, nm_before = sparsity_stats(adapter), nm_validity(adapter)
    section = _model_section(model, source, spec, adapter)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    torch.manual_seed(config.seed)           # the adapters' initialisation
    peft_model = attach_lora(model, config, targets)
    masked_training = mask_adapters(peft_model, masks) if masks and config.masked_training else 0
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    run = train_lora(peft_model, tok, data, config, folder / CHECKPOINTS, config.resume, progress, callbacks)
    peft_model.eval()
    if config.keep_adapter:
        recovered, merge, merged_loss = peft_model, "adapter kept", None
    else:
        recovered = merge_lora(peft_model, masks)
        merge = "masked" if masks else "dense"
        merged_loss = _merged_validation_loss(recovered, data, config, tok)
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
    result.report = _report(result, run, targets, trainable, len(masks), masked_training, section, prior, spec)
    if measure is not None:
        result.report.update(measure(recovered))
    result.report["lineage"] = extend_lineage(prior, result.report, section)   # the stages so far, then recovery
    return result


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
    from .plot import plot_losses

    result.model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    plot_losses(result.history, work / LOSS_PLOT,
                f"LoRA recovery of {result.report['recovered_from']}\n{result.data['dataset']}, "
                f"{result.tokens_seen:,} tokens, {result.steps} steps")
    write_json(work / REPORT_NAME, result.report)
