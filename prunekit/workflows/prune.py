"""`prunekit prune` as a function: load, check, calibrate, prune, evaluate, report, save."""
from __future__ import annotations

from .. import lineage
from .. import report as rep
from ..api import prune
from ..data.calibration import build_calibration
from ..export.save import check_output_dir, read_report, save_checkpoint
from ..methods.registry import method_for
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from .common import at_least, check_device, eval_names, prepare_evals, run_evals


def prune_model(model: str, config, *, calib: str = "c4", nsamples: int | None = None, seqlen: int | None = None,
                seed: int = 0, data_dir: str | None = None, dtype: str = "float32", device: str = "cpu",
                trust_remote_code: bool = False, evals="wikitext2", eval_seqlen: int = 2048,
                eval_windows: int | None = None, eval_dense: bool = False, output: str | None = None,
                overwrite: bool = False, progress: bool = True) -> dict:
    """Prune the model `model` (hub id, folder, .gguf or alias) with the method of `config`;
    evaluate perplexity on `evals`; save a checkpoint, the report and the method's figures to
    `output` when given. Calibration defaults to the method's own (`Method.calibration`).
    Returns the report."""
    device = check_device(device)
    cls = method_for(config)
    defaults = cls.calibration
    if defaults is not None:
        nsamples = defaults.nsamples if nsamples is None else nsamples
        seqlen = defaults.seqlen if seqlen is None else seqlen
        at_least("nsamples", nsamples)
        at_least("seqlen", seqlen, 2)
    if output:
        check_output_dir(output, overwrite)
    model, tok, source = load_model(model, dtype, trust_remote_code)
    cls(config, ModelAdapter(model)).check()
    texts = prepare_evals(eval_names(evals), tok, eval_seqlen, eval_windows, data_dir)
    report = {"command": "prune", "model": rep.model_section(model, source)}
    if eval_dense and texts:
        report["eval_dense"] = run_evals(model, texts, eval_seqlen, eval_windows, device)
    calibration = None
    if cls.needs_calibration():
        calibration = build_calibration(calib, model, tok, nsamples, seqlen, seed, data_dir, device)
    result = prune(model, config, calibration, device=device, progress=progress)
    model = result.model
    report["method"] = {"name": result.method, "config": result.config, "events": result.events, **result.details}
    report["calibration"] = calibration.describe() if calibration else None
    report["sparsity"] = result.sparsity
    report["timing"] = {"prune_s": result.seconds, "peak_rss_gb": rep.peak_rss_gb()}
    before = dict(report["model"])
    report["model"].update(rep.model_section(model, source))
    report["eval"] = run_evals(model, texts, eval_seqlen, eval_windows, device)
    report["environment"] = rep.environment(device)
    lineage.attach(report, read_report(source.path) if source.kind == "local" else None, before)  # issue 15
    if output:
        report["output"] = output
        save_checkpoint(model, tok, report, output, overwrite, lambda folder: cls.figures(report, folder))
    return report
