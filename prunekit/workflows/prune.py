"""`prunekit prune` as a function: check, load, calibrate, prune, save, evaluate, report.

Everything knowable from the arguments and the model's config is checked before the pruning;
the pruned model is saved before it is evaluated, so a failing or interrupted evaluation never
throws it away."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..reports import lineage
from ..reports import summary as rep
from ..api import prune
from ..data.calibration import build_calibration
from ..errors import PrunekitError
from ..export.save import check_output_dir, read_report, save_checkpoint, update_report
from ..export.stale import remove_stale_temporaries
from ..methods.registry import method_for
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from ..models.paths import check_output_apart
from ..stats import sparsity_stats
from ..streaming.mode import DEFAULT_STREAM_ABOVE, choose_mode
from .common import (EvalProtocol, at_least, calibration_size, check_calibration_spec, check_device, prepare_evals,
                     run_evals)
from .budget import check_calibration_fits
from .preflight import check_positions, check_remote_code, check_writable, fit_window
from .stream import stream_prune_model


def prune_model(model: str, config, *, calib: str = "c4", nsamples: int | None = None, seqlen: int | None = None,
                seed: int = 0, data_dir: str | None = None, dtype: str = "auto", device: str = "cpu",
                trust_remote_code: bool = False, evals="wikitext2", eval_seqlen: int | None = None,
                eval_windows: int | None = None, eval_dense: bool = False, output: str | None = None,
                overwrite: bool = False, progress: bool = True, stream: bool | None = None,
                stream_above: float = DEFAULT_STREAM_ABOVE, resume: bool = False) -> dict:
    """Prune the model `model` (hub id, folder, .gguf or alias) with the method of `config`;
    save a checkpoint, the report and the method's figures to `output` when given; then evaluate
    perplexity on `evals` (added to the saved report). Calibration defaults to the method's own
    (`Method.calibration`), evaluation windows to 2048 tokens; a default longer than the model's
    positions is shortened to them (the report and the summary say so), a length given that is
    longer is refused.
    `stream` True or False forces streaming block by block (stream_prune_model) or loading in
    memory; None streams when the weights exceed `stream_above` of the available memory and the
    run can stream. `resume` continues an interrupted streamed run, so it streams.
    `evals` may also be an EvalProtocol (what run_recipe hands on), with no eval_seqlen/eval_windows.
    Returns the report."""
    device = check_device(device)
    protocol = EvalProtocol.of(evals, eval_seqlen, eval_windows)
    if output:
        check_output_apart(output, model=model)
    cls = method_for(config)
    if resume and stream is False:
        raise PrunekitError("--resume continues a streamed run: it does not go with --no-stream (stream=False)")
    mode = choose_mode([model], dtype, True if resume else stream, stream_above, _cannot_stream(cls, config, calib, output))
    if resume and not stream:
        mode = dataclasses.replace(mode, reason="--resume")
    if mode.streamed:
        return stream_prune_model(model, config, output=output, calib=calib, nsamples=nsamples, seqlen=seqlen,
                                  seed=seed, data_dir=data_dir, dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code, evals=protocol, eval_dense=eval_dense,
                                  resume=resume, overwrite=overwrite, progress=progress, mode=mode)
    given_seqlen = seqlen
    nsamples, seqlen = calibration_size(cls, nsamples, seqlen)
    protocol.check_names()          # a wrong name is refused before any window is checked
    if cls.needs_calibration():
        check_calibration_spec(calib)
    if protocol.names:
        at_least("eval_seqlen", protocol.seqlen, 2)
    stale = []
    if output:
        check_output_dir(output, overwrite)
        check_writable(output)
        stale = remove_stale_temporaries(output)
    check_remote_code(model, trust_remote_code)
    model, tok, source = load_model(model, dtype, trust_remote_code)
    adapter = ModelAdapter(model)
    cls(config, adapter).check()     # the method's own refusals first: they name its options
    seqlen, calibration_note = fit_window(model.config, given_seqlen, seqlen) if cls.needs_calibration() else (seqlen, None)
    protocol = protocol.fit(model.config)
    check_positions(model.config, seqlen=seqlen if cls.needs_calibration() else None,
                    eval_seqlen=protocol.used_seqlen)
    if cls.needs_calibration():
        check_calibration_fits(model, nsamples, seqlen, adapter=adapter)
    texts = prepare_evals(protocol, tok, data_dir)
    report = {"command": "prune", "mode": mode.to_report(), "model": rep.model_section(model, source, adapter)}
    if stale:
        report["removed_stale"] = stale
    if eval_dense and texts:
        report["eval_dense"] = run_evals(model, texts, protocol, device)
    calibration = None
    if cls.needs_calibration():
        calibration = build_calibration(calib, model, tok, nsamples, seqlen, seed, data_dir, device)
    result = prune(model, config, calibration, device=device, progress=progress)
    if result.model is not model:    # a method that builds a smaller model
        adapter = ModelAdapter(result.model)
    model = result.model
    report["method"] = {"name": result.method, "config": result.config, "events": result.events, **result.details}
    report["calibration"] = calibration.describe() if calibration else None
    if calibration and calibration_note:
        report["calibration"]["window_note"] = calibration_note
    report["sparsity"] = _sparsity(result.sparsity, adapter)
    report["timing"] = {"prune_s": result.seconds, "peak_rss_gb": rep.peak_rss_gb()}
    before = dict(report["model"])
    report["model"].update(rep.model_section(model, source, adapter))
    report["environment"] = rep.environment(device)
    report["eval"] = {}
    # a prunekit output as input: its report's stages come first, so the report tells every stage
    lineage.attach(report, read_report(source.path) if source.kind == "local" else None, before)
    if output:
        report["output"] = str(Path(output).expanduser().resolve())
        save_checkpoint(model, tok, report, output, overwrite, lambda folder: cls.figures(report, folder))
    report["eval"] = _evaluate_saved(model, texts, protocol, device, report.get("output"))
    if report["eval"]:      # this stage's protocols join its lineage entry once measured
        report["lineage"][-1]["eval"] = lineage.stage_evals(report)
        if output:
            update_report(output, {"lineage": report["lineage"]})
    return report


def _cannot_stream(cls, config, calib: str, output: str | None) -> str | None:
    """Why this run could not stream, or None."""
    why = cls.cannot_stream(config)
    if why:
        return why
    if not output:
        return "there is no --output to write the streamed blocks to"
    if calib == "self" and cls.needs_calibration():
        return "calibration on 'self' generates text with the whole model"
    return None


def _sparsity(of_method: dict, adapter: ModelAdapter) -> dict:
    """The method's figure is over the blocks it pruned; when those are not all of them the whole
    model's figure is added, labelled, so neither is mistaken for the other."""
    names = list(of_method.get("per_layer", {}))
    blocks = sorted({int(n.split(".")[1]) for n in names if n.startswith("layers.")})
    if not blocks or len(blocks) == adapter.num_layers:
        return of_method
    runs = f"{blocks[0]}-{blocks[-1]}" if blocks == list(range(blocks[0], blocks[-1] + 1)) else ",".join(map(str, blocks))
    return {**of_method, "blocks": runs, "whole_model": sparsity_stats(adapter)["overall"]}


def _evaluate_saved(model, texts, protocol: EvalProtocol, device, output: str | None) -> dict:
    """Evaluate; once the model is saved a failure keeps it, records why in its report and says so."""
    if not output:
        return run_evals(model, texts, protocol, device)
    try:
        results = run_evals(model, texts, protocol, device)
    except KeyboardInterrupt as e:
        update_report(output, {"eval_error": "interrupted"})
        e.saved = output     # the CLI says the output is kept, not that nothing was written
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        update_report(output, {"eval_error": first})
        raise PrunekitError(f"evaluation failed ({first}); the pruned model is saved, unevaluated, in {output}") from e
    if results:
        update_report(output, {"eval": results})
    return results
