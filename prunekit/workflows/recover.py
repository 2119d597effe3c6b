"""`prunekit recover` as a function: check, load, recover with LoRA, save, evaluate."""
from __future__ import annotations

from ..data.sources import default_data_dir
from ..export.save import check_output_dir
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from ..models.paths import check_output_apart
from .common import EvalProtocol, check_device, prepare_evals, run_evals
from .preflight import check_positions


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
    protocol = EvalProtocol.of(evals, eval_seqlen, eval_windows)
    protocol.check_names()
    loaded, tok, source = load_model(model, dtype, trust_remote_code)
    config.target_names(ModelAdapter(loaded).linear_names())      # a bad --targets fails before any work
    protocol = protocol.fit(loaded.config)
    check_positions(loaded.config, eval_seqlen=protocol.used_seqlen)
    texts = prepare_evals(protocol, tok, data_dir)
    result = recover(loaded, config, data=data, output=output, tokenizer=tok, data_dir=data_dir, overwrite=overwrite,
                     measure=lambda m: {"eval": run_evals(m, texts, protocol, device)},
                     source=source)
    return result.report
