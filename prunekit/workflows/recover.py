"""`prunekit recover` as a function: check, load, recover with LoRA, save, evaluate."""
from __future__ import annotations

from ..data.sources import default_data_dir
from ..export.save import check_output_dir
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from ..models.paths import check_output_apart
from .common import DEFAULT_EVAL_SEQLEN, check_device, check_eval_names, eval_names, prepare_evals, run_evals
from .preflight import check_positions, fit_window


def recover_model(model: str, config, *, data: str = "c4", output: str, data_dir: str | None = None,
                  dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False, evals="wikitext2",
                  eval_seqlen: int | None = None, eval_windows: int | None = None, overwrite: bool = False) -> dict:
    """LoRA-recover the model `model` (usually a prunekit output folder) on `data` with
    `config` (a RecoveryConfig) into `output`; perplexity on `evals` after (windows of
    `eval_seqlen`, by default 2048 or the model's positions where it has fewer). Returns the report."""
    from ..recovery.api import recover
    from ..recovery.data import refuse_evaluation_data

    device = check_device(device)
    config.device = device
    check_output_apart(output, model=model)
    if not config.resume:
        check_output_dir(output, overwrite)
    refuse_evaluation_data(data, data_dir or default_data_dir())
    names = eval_names(evals)
    check_eval_names(names)
    loaded, tok, source = load_model(model, dtype, trust_remote_code)
    config.target_names(ModelAdapter(loaded).linear_names())      # a bad --targets fails before any work
    eval_seqlen, eval_note = fit_window(loaded.config, eval_seqlen, DEFAULT_EVAL_SEQLEN)
    check_positions(loaded.config, eval_seqlen=eval_seqlen if names else None)
    texts = prepare_evals(names, tok, eval_seqlen, eval_windows, data_dir, eval_note)
    result = recover(loaded, config, data=data, output=output, tokenizer=tok, data_dir=data_dir, overwrite=overwrite,
                     measure=lambda m: {"eval": run_evals(m, texts, eval_seqlen, eval_windows, device)},
                     source=source)
    return result.report
