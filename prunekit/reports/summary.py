"""The prunekit_report.json every run writes, and the one-screen summary printed from it."""
from __future__ import annotations

import platform
import resource
import shlex
import sys
from pathlib import Path

import torch
import transformers

from ..methods.registry import method_class
from ..models.adapter import ModelAdapter
from ..models.serving import servable, serving_line
from ..stats import param_counts
from ..version import __version__

_command_line: list[str] | None = None


def record_command_line(argv: list[str]) -> None:
    """The command line reports state (the CLI gives its own; otherwise sys.argv)."""
    global _command_line
    _command_line = list(argv)


def absolute_source(source) -> str:
    """A local folder or file as an absolute path (usable from any directory); hub ids and
    aliases as typed."""
    if source.kind == "gguf":
        return source.gguf
    if source.kind == "local":
        return str(Path(source.path).resolve())
    return source.spec


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 ** 2) if sys.platform != "darwin" else kib / (1024 ** 3)


def environment(device: str) -> dict:
    return {"prunekit": __version__, "command_line": shlex.join(_command_line or sys.argv),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": str(device),
            "cpu_threads": torch.get_num_threads()}


def model_section(model, source, adapter: ModelAdapter | None = None) -> dict:
    """The report's model section; `adapter`: the caller's ModelAdapter of `model`, if it holds one."""
    adapter = ModelAdapter(model) if adapter is None else adapter
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    counts = param_counts(model)
    return {"source": absolute_source(source), "source_kind": source.kind, "architecture": arch,
            "family": adapter.family, "num_layers": adapter.num_layers, **counts,
            "serving": serving_of(model.config, counts)}


def serving_of(config, counts: dict) -> dict:
    """Which engines load a model with this config (models/serving.py); zeros from the counts."""
    zeros = 1 - counts["params_nonzero"] / max(1, counts["params_total"])
    return servable(config.to_dict(), zeros)


def method_lines(report: dict) -> list[str]:
    cls = method_class((report.get("method") or {}).get("name"))
    return cls.summary_lines(report) if cls else [f"  method        {report['method'].get('name')}"]


def format_summary(report: dict) -> str:
    m = report["model"]
    before = ((report.get("lineage") or [{}])[-1]).get("layers_before")
    layers = f"{m['num_layers']} layers" if before in (None, m["num_layers"]) else \
        f"{before} layers, {m['num_layers']} after pruning"
    lines = [f"prunekit {report.get('command', '')}: {m['source']} ({m['architecture']}, {layers})"]
    mode = report.get("mode")
    if mode:    # streamed or in memory, and why: the run's memory depends on it
        lines.append(f"  mode          {'streamed' if mode['streamed'] else 'in memory'} ({mode['reason']})")
    if report.get("method"):
        lines += method_lines(report)
    if len(report.get("lineage") or []) > 1:      # a model pruned in several stages: name them all
        from .lineage import label
        lines.append(f"  lineage       {label(report['lineage'])}")
    cal = report.get("calibration")
    if cal:
        split = f":{cal['split']}" if cal.get("split") else ""
        lines.append(f"  calibration   {cal['dataset']}{split} {cal['nsamples']} x {cal['seqlen']} seed {cal['seed']}"
                     + (f" ({cal['window_note']})" if cal.get("window_note") else "")
                     + (f"  ({cal['where']})" if cal.get("where") else ""))
    sp = report.get("sparsity")
    if sp and "whole_model" in sp:   # --layers: the pruned blocks and the whole model differ
        lines.append(f"  sparsity      {sp['overall']:.4f} of the pruned blocks' linear weights are zero "
                     f"(blocks {sp['blocks']}); {sp['whole_model']:.4f} over all decoder blocks")
    elif sp and sp.get("overall"):
        lines.append(f"  sparsity      {sp['overall']:.4f} of decoder-block linear weights are zero")
    lines.append(f"  parameters    {m['params_total']:,} total, {m['params_nonzero']:,} non-zero")
    t = report.get("timing", {})
    if "prune_s" in t:
        lines.append(f"  time          prune {t['prune_s']:.1f} s, peak RSS {t['peak_rss_gb']:.2f} GB")
    for name, ev in report.get("eval", {}).items():
        dense = report.get("eval_dense", {}).get(name)
        extra = f"  (dense {dense['ppl']:.3f})" if dense else ""
        note = f", {ev['window_note']}" if ev.get("window_note") else ""
        lines.append(f"  ppl {name:<10s}{ev['ppl']:.3f} [{ev['protocol']}{note}]{extra}")
    kl = report.get("kl")
    if kl:
        lines.append(f"  KL to dense   {kl['kl']:.4f} nats/token, top-1 agreement {kl['top1_agreement']:.4f} "
                     f"({kl['tokens']} tokens of {kl['data']['dataset']}"
                     + (f"; windows of {kl['data']['seqlen']}, {kl['window_note']}" if kl.get("window_note") else "")
                     + ")")
    zs = report.get("zero_shot")
    if zs:
        lim = f", first {zs['limit']} per task" if zs.get("limit") else ""
        lines.append(f"  zero-shot     average {zs['average']:.4f} (lm-eval {zs['lm_eval']}, 0-shot{lim})")
        for task, r in zs["tasks"].items():
            norm = f"  acc_norm {r['acc_norm']:.4f}" if "acc_norm" in r else ""
            lines.append(f"    {task:<14s}acc {r['acc']:.4f}{norm}  (n={r['examples']}, average uses {r['metric']})")
    if m.get("serving"):
        lines.append(f"  serves in     {serving_line(m['serving'])}")
    if report.get("output"):
        lines.append(f"  saved         {report['output']}")
    elif report.get("command") == "prune":
        lines.append("  saved         not saved (no output folder given)")
    return "\n".join(lines)
