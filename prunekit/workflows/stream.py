"""`prunekit prune --stream` as a function: the model never in memory. The tokenizer and config
are read, calibration is built from the tokenizer, the checkpoint is pruned block by block into
the output folder (resumable), and perplexity is computed by streaming the output."""
from __future__ import annotations

from pathlib import Path

from ..reports import lineage
from ..reports import summary as rep
from ..export.atomic import write_json
from ..data.calibration import build_calibration
from ..errors import PrunekitError
from ..export.save import REPORT_NAME, read_report, update_report
from ..export.stale import remove_stale_temporaries
from ..methods.registry import method_for
from ..streaming import Mode, StreamedModel, stream_counts, stream_prune
from .common import (EvalProtocol, calibration_size, check_calibration_spec, check_device, prepare_evals,
                     run_stream_evals)
from .budget import check_calibration_fits
from .preflight import check_positions, check_remote_code, check_writable, fit_window


def stream_prune_model(model: str, config, *, output: str, calib: str = "c4", nsamples: int | None = None,
                       seqlen: int | None = None, seed: int = 0, data_dir: str | None = None, dtype: str = "auto",
                       device: str = "cpu", trust_remote_code: bool = False, evals="wikitext2",
                       eval_seqlen: int | None = None, eval_windows: int | None = None, eval_dense: bool = False,
                       resume: bool = False, overwrite: bool = False, progress: bool = True,
                       mode: Mode | None = None) -> dict:
    """Prune the safetensors checkpoint `model` into `output` holding about one block in memory;
    `resume` continues an interrupted run of the same command. `mode` is why it streams (prune_model's
    decision; by default --stream). `evals` may also be an EvalProtocol (prune_model's), with no
    eval_seqlen/eval_windows. Returns the report."""
    from transformers import AutoTokenizer

    device = check_device(device)
    protocol = EvalProtocol.of(evals, eval_seqlen, eval_windows)
    if not output:
        raise PrunekitError("--stream writes the pruned blocks as it goes: give --output")
    cls = method_for(config)
    if calib == "self" and cls.needs_calibration():
        raise PrunekitError("--stream cannot calibrate on 'self' (generating text needs the whole model)")
    given_seqlen = seqlen
    nsamples, seqlen = calibration_size(cls, nsamples, seqlen)
    protocol.check_names()
    if cls.needs_calibration():
        check_calibration_spec(calib)
    check_writable(output)
    stale = remove_stale_temporaries(output, own=("partial",))    # the run state reports its own .partial
    check_remote_code(model, trust_remote_code)
    sm = StreamedModel(model, dtype, trust_remote_code)
    seqlen, calibration_note = fit_window(sm.config, given_seqlen, seqlen) if cls.needs_calibration() else (seqlen, None)
    protocol = protocol.fit(sm.config)
    check_positions(sm.config, seqlen=seqlen if cls.needs_calibration() else None,
                    eval_seqlen=protocol.used_seqlen)
    if cls.needs_calibration():
        check_calibration_fits(sm.model, nsamples, seqlen)
    tok = AutoTokenizer.from_pretrained(sm.source.path, trust_remote_code=trust_remote_code)
    texts = prepare_evals(protocol, tok, data_dir)
    calibration = build_calibration(calib, None, tok, nsamples, seqlen, seed, data_dir, device) \
        if cls.needs_calibration() else None
    report = {"command": "prune", "streamed": True, "mode": (mode or Mode(True, "--stream")).to_report(),
              "model": {"source": rep.absolute_source(sm.source), "source_kind": sm.source.kind,
                        "architecture": (sm.config.architectures or ["?"])[0],
                        "num_layers": sm.config.num_hidden_layers, "bytes_on_disk": sm.files.nbytes()}}
    if stale:
        report["removed_stale"] = stale
    # what the lineage needs of the input: the parameter count from the shapes, its report if a prunekit output
    before = {**report["model"], "params_total": sum(p.numel() for p in sm.model.parameters())}
    prior = read_report(sm.source.path) if sm.source.kind == "local" else None
    if eval_dense and texts:
        report["eval_dense"] = run_stream_evals(sm, texts, protocol, device, progress=progress)

    def write_report(folder: Path) -> None:     # the method's part is added once the run returns
        write_json(folder / REPORT_NAME, report)

    result = stream_prune(sm, config, calibration, output, device=device, dtype=dtype, resume=resume,
                          overwrite=overwrite, progress=progress, trust_remote_code=trust_remote_code,
                          extra=write_report, tokenizer=tok)
    return _finish(report, result, calibration, output, texts, protocol, device, progress,
                   calibration_note, before, prior, trust_remote_code)


def _finish(report, result, calibration, output, texts, protocol: EvalProtocol, device, progress,
            calibration_note, before, prior, trust_remote_code):
    report["method"] = {"name": result.method, "config": result.config, "events": result.events, **result.details}
    report["calibration"] = calibration.describe() if calibration else None
    if calibration and calibration_note:
        report["calibration"]["window_note"] = calibration_note
    report["sparsity"] = result.sparsity
    report["timing"] = {"prune_s": result.seconds, "peak_rss_gb": rep.peak_rss_gb()}
    report["environment"] = rep.environment(device)
    report["output"] = str(Path(output).resolve())
    # the output as written, one block at a time; code it ships is prunekit's own, written by this run
    saved = StreamedModel(output, "auto", True)
    params, _ = stream_counts(saved)
    report["model"].update(params, num_layers=saved.config.num_hidden_layers,
                           serving=rep.serving_of(saved.config, params))
    lineage.attach(report, prior, before)
    update_report(output, {k: report[k] for k in ("model", "method", "calibration", "sparsity", "timing", "environment",
                                                   "output", "lineage", "pruned_from") if k in report})
    evals = run_stream_evals(saved, texts, protocol, device, progress=progress)
    report["eval"] = evals
    if evals:       # this stage's protocols join its lineage entry once measured
        report["lineage"][-1]["eval"] = lineage.stage_evals(report)
    update_report(output, {"eval": evals, "lineage": report["lineage"]})
    return report
