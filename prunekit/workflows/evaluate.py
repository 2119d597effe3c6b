"""`prunekit eval` as a function: perplexity, KL to the dense model and zero-shot accuracy of any
model, written to a report (and, on request, merged into a prunekit output folder's report)."""
from __future__ import annotations

from pathlib import Path

from ..reports import summary as rep
from ..export.atomic import atomic_dir, write_json
from ..errors import PrunekitError
from ..reports.lineage import stages_of
from ..export.save import REPORT_NAME, check_output_dir, read_report, update_report
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from ..models.paths import check_not_itself, check_output_apart
from ..stats import sparsity_stats
from ..streaming.mode import DEFAULT_STREAM_ABOVE, choose_mode
from .budget import check_calibration_fits
from .common import (DEFAULT_KL_SEQLEN, EvalProtocol, at_least, check_calibration_spec, check_device, prepare_evals,
                     run_evals, run_stream_evals)
from .preflight import check_positions, check_remote_code, check_writable, fit_window


def evaluate_model(model: str, *, evals="wikitext2", eval_seqlen: int | None = None, eval_windows: int | None = None,
                   tasks=None, limit: int | None = None, batch_size: int = 8, dense: str | None = None,
                   kl_data: str = "wikitext2:test", kl_nsamples: int = 16, kl_seqlen: int | None = None,
                   data_dir: str | None = None, dtype: str = "auto", device: str = "cpu",
                   trust_remote_code: bool = False, save_to_model: bool = False, output: str | None = None,
                   overwrite: bool = False, stream: bool | None = None,
                   stream_above: float = DEFAULT_STREAM_ABOVE) -> dict:
    """Evaluate `model`: perplexity on `evals` (add 'kl' for the KL divergence from `dense`, by
    default the source named in the folder's report), zero-shot `tasks` (a list, a comma list or
    'all') through lm-eval. `stream` True streams the model (and the dense one) block by block,
    never whole in memory; None does so when their weights exceed `stream_above` of the available
    memory and the evaluation can stream (not zero-shot, not KL on 'self'). Windows default to 2048
    tokens (perplexity) and 512 (KL), shortened to the model's positions where it has fewer (the
    report says so); a length given that is longer is refused. Returns the report."""
    device = check_device(device)
    if output:
        check_output_dir(output, overwrite)
        check_writable(output)
    protocol = EvalProtocol.of(evals, eval_seqlen, eval_windows)
    want_kl = "kl" in protocol.names
    protocol = protocol.only(n for n in protocol.names if n != "kl")     # KL has its own windows
    protocol.check_names()          # a wrong name is refused before any window is checked
    if want_kl:
        check_calibration_spec(kl_data)
    task_list = _task_list(tasks, limit, batch_size)
    prior = read_report(model)
    if save_to_model and prior is None:
        raise PrunekitError(f"--save-to-model needs a prunekit output folder; {model} has no {REPORT_NAME}")
    dense_spec = dense or (prior or {}).get("model", {}).get("source")
    if want_kl:
        at_least("kl_nsamples", kl_nsamples)
        at_least("kl_seqlen", kl_seqlen, 2)
        if not dense_spec:
            raise PrunekitError("--eval kl needs --dense (the model is not a prunekit output folder)")
        check_not_itself(model, "dense", dense_spec)
    if output:
        check_output_apart(output, model=model, dense=dense_spec if want_kl else None)
    check_remote_code(model, trust_remote_code)
    cannot = _cannot_stream(task_list, want_kl, kl_data)
    if stream and cannot:
        raise PrunekitError(f"--stream: {cannot}")
    mode = choose_mode([model] + ([dense_spec] if want_kl else []), dtype, stream, stream_above, cannot)
    subject = _Streamed(model, dtype, trust_remote_code) if mode.streamed else _Loaded(model, dtype, trust_remote_code)
    protocol = protocol.fit(subject.config)
    kl_seqlen, kl_note = fit_window(subject.config, kl_seqlen, DEFAULT_KL_SEQLEN)
    check_positions(subject.config, eval_seqlen=protocol.used_seqlen,
                    kl_seqlen=kl_seqlen if want_kl else None)
    texts = prepare_evals(protocol, subject.tok, data_dir)
    if not texts and not task_list and not want_kl:
        raise PrunekitError("nothing to evaluate: give --eval and/or --tasks")
    section, sparsity = subject.counts()
    report = {"command": "eval", "mode": mode.to_report(), "model": section, "method": None, "calibration": None,
              "sparsity": sparsity}
    if prior and prior.get("method"):   # evaluating a prunekit output: keep what was done to it
        report.update(method=prior["method"], calibration=prior.get("calibration"), pruned_from=prior["model"]["source"])
    if prior:       # the stages that made the model, so the evaluation reads against them
        report["lineage"] = stages_of(prior)
    results = {}
    if texts:
        results["eval"] = subject.perplexities(texts, protocol, device)
    if want_kl:
        results["kl"] = subject.kl(dense_spec, kl_data, kl_nsamples, kl_seqlen, data_dir, dtype, device,
                                   trust_remote_code)
        if kl_note:
            results["kl"]["window_note"] = kl_note
    if task_list:
        from ..eval.zeroshot import zero_shot
        results["zero_shot"] = zero_shot(subject.model, subject.tok, task_list, data_dir, limit, batch_size, device)
    report.update(results)
    report["timing"] = {"peak_rss_gb": rep.peak_rss_gb()}
    report["environment"] = rep.environment(device)
    if output:
        report["output"] = str(Path(output).expanduser().resolve())
        with atomic_dir(output, overwrite) as tmp:
            write_json(tmp / REPORT_NAME, report)
    if save_to_model:
        update_report(model, results)
    return report


def _task_list(tasks, limit, batch_size) -> list[str] | None:
    if not tasks:
        return None
    from ..eval.zeroshot import DEFAULT_TASKS, parse_tasks
    at_least("limit", limit)
    at_least("batch_size", batch_size)
    if tasks == "all":
        return list(DEFAULT_TASKS)
    return parse_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))


def _cannot_stream(task_list, want_kl: bool, kl_data: str) -> str | None:
    """Why this evaluation could not stream, or None."""
    if task_list:
        return "zero-shot tasks (lm-eval) need the whole model in memory"
    if want_kl and kl_data.split(":")[0] == "self":
        return "--kl-data self generates text with the whole dense model"
    return None


class _Loaded:
    """The model in memory."""

    def __init__(self, spec: str, dtype, trust_remote_code: bool):
        self.model, self.tok, self.source = load_model(spec, dtype, trust_remote_code)
        self.config = self.model.config

    def counts(self) -> tuple[dict, dict]:
        adapter = ModelAdapter(self.model)
        return rep.model_section(self.model, self.source, adapter), sparsity_stats(adapter)

    def perplexities(self, texts, protocol: EvalProtocol, device) -> dict:
        return run_evals(self.model, texts, protocol, device)

    def kl(self, dense_spec, kl_data, nsamples, seqlen, data_dir, dtype, device, trust_remote_code) -> dict:
        from ..data.calibration import build_calibration
        from ..eval.kl import kl_to_dense
        dense, _, _ = load_model(dense_spec, dtype, trust_remote_code)
        windows = build_calibration(kl_data, dense, self.tok, nsamples, seqlen, 0, data_dir, device)
        return {**kl_to_dense(self.model, dense, windows.input_ids, device), "dense": dense_spec,
                "data": windows.describe()}


class _Streamed:
    """The model read from its safetensors one block at a time, never whole in memory."""

    def __init__(self, spec: str, dtype, trust_remote_code: bool):
        from transformers import AutoTokenizer
        from ..streaming import StreamedModel
        self.sm = StreamedModel(spec, dtype, trust_remote_code)
        self.config = self.sm.config
        self.model = None
        try:
            self.tok = AutoTokenizer.from_pretrained(self.sm.source.path, trust_remote_code=trust_remote_code)
        except Exception as e:
            raise PrunekitError(f"model '{spec}' has no usable tokenizer: {str(e).splitlines()[0]}") from e

    def counts(self) -> tuple[dict, dict]:
        from ..streaming import stream_counts
        params, sparsity = stream_counts(self.sm)
        source = self.sm.source
        section = {"source": rep.absolute_source(source), "source_kind": source.kind,
                   "architecture": (self.config.architectures or ["?"])[0],
                   "family": ModelAdapter(self.sm.model).family, "num_layers": self.config.num_hidden_layers,
                   **params, "serving": rep.serving_of(self.config, params)}
        return section, sparsity

    def perplexities(self, texts, protocol: EvalProtocol, device) -> dict:
        return run_stream_evals(self.sm, texts, protocol, device)

    def kl(self, dense_spec, kl_data, nsamples, seqlen, data_dir, dtype, device, trust_remote_code) -> dict:
        from ..data.calibration import build_calibration
        from ..streaming import StreamedModel, stream_kl
        check_calibration_fits(self.sm.model, nsamples, seqlen, flags=("--kl-nsamples", "--kl-seqlen"))
        dense = StreamedModel(dense_spec, dtype, trust_remote_code)
        windows = build_calibration(kl_data, None, self.tok, nsamples, seqlen, 0, data_dir, device)
        return {**stream_kl(self.sm, dense, windows.input_ids, device), "dense": dense_spec,
                "data": windows.describe()}
