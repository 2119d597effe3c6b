"""Lineage: what was done to a model, stage by stage. Every prunekit report carries
`report["lineage"]`, a list of stages (method, config, parameters and layers before and after,
calibration or training data, evaluation protocols), carried over from the input folder's report
when the input is itself a prunekit output, so a model pruned by depth, then width, then
recovered says so."""
from __future__ import annotations

from ..methods.registry import method_class

RECOVER = "recover"


def stage_evals(report: dict) -> dict:
    """Each evaluation's result with its protocol (the numbers mean nothing without it)."""
    return {name: {"ppl": ev["ppl"], "protocol": ev["protocol"]} for name, ev in (report.get("eval") or {}).items()}


def stage_of(report: dict, before: dict | None = None) -> dict:
    """One stage from a single-stage prune or recover report. `before` is the model section of the
    input model (params_total, num_layers); without it the stage says what the report says."""
    model = report.get("model") or {}
    before = before or {}
    stage = {"command": report.get("command", "prune"),
             "input": report.get("pruned_from") or report.get("recovered_from") or model.get("source"),
             "params_before": before.get("params_total"), "params_after": model.get("params_total"),
             "nonzero_after": model.get("params_nonzero"),
             "layers_before": before.get("num_layers"), "layers_after": model.get("num_layers"),
             "eval": stage_evals(report)}
    if report.get("command") == RECOVER:
        rec = report["recovery"]
        stage.update(method=RECOVER, config=rec["config"], data=rec["data"], steps=rec["steps"],
                     tokens_seen=rec["tokens_seen"], seconds=rec["wall_s"], merge=rec["merge"])
        stage["method_section"] = None
    else:
        meth = report.get("method") or {}
        stage.update(method=meth.get("name"), config=meth.get("config"), calibration=report.get("calibration"),
                     seconds=(report.get("timing") or {}).get("prune_s"), method_section=meth)
    return stage


def stages_of(report: dict | None) -> list[dict]:
    """The lineage a report stands for: its own list, or for a report written before lineage
    existed, the one stage it describes (none for a dense model)."""
    if not report:
        return []
    if report.get("lineage") is not None:
        return list(report["lineage"])
    if report.get("command") == RECOVER:
        return stages_of(report.get("before_recovery")) + [stage_of(report)]
    return [stage_of(report)] if report.get("method") else []


def extend(prior: dict | None, report: dict, before: dict | None) -> list[dict]:
    """The lineage of `report`: the input's stages (from its report `prior`) and this one."""
    stages = stages_of(prior) + [stage_of(report, before)]
    for i, stage in enumerate(stages, 1):
        stage.setdefault("stage", i)
    return stages


def attach(report: dict, prior: dict | None, before: dict | None) -> None:
    """Give a finished prune report its lineage. When the input was a prunekit output, the report's
    model source becomes the dense origin (bench and KL compare against it) and `pruned_from`
    names the input."""
    lineage = extend(prior, report, before)
    report["lineage"] = lineage
    if len(lineage) > 1 and report.get("command") != RECOVER:
        report["pruned_from"] = lineage[-1]["input"]
        report["model"]["source"] = origin(lineage, report["model"].get("source"))


def origin(lineage: list[dict], default: str | None = None) -> str | None:
    """The dense model the first stage started from."""
    return lineage[0].get("input") if lineage else default


def stage_label(stage: dict) -> str:
    """How a comparison names one stage: the method's own label; for recovery what was trained and
    on which loss (`lora`, `lora-kd`, `full-kd+lm`, `local+full-kd`, `local`)."""
    if stage.get("method") == RECOVER:
        return recovery_label(stage.get("config") or {})
    section = stage.get("method_section")
    if section:
        cls = method_class(section.get("name"))
        if cls is not None:
            try:
                return cls.describe({"method": section, "sparsity": {}})["method"]
            except (KeyError, TypeError):   # a section written by another prunekit version
                pass
    return str(stage.get("method"))


def recovery_label(config: dict) -> str:
    local = config.get("local", "off")
    if local == "only":
        return "local"
    train = config.get("train", "lora")
    name = "blocks" if train.startswith("blocks:") else train
    loss = config.get("loss", "lm")
    return ("local+" if local == "first" else "") + name + ("" if loss == "lm" else f"-{loss}")


def label(lineage: list[dict]) -> str:
    """'slm+search+lora' for a merge, then width, then recovery."""
    return "+".join(stage_label(s) for s in lineage)


def removed_fraction(lineage: list[dict]) -> float | None:
    """Fraction of the first input's parameters the whole lineage removed."""
    first, last = lineage[0].get("params_before"), lineage[-1].get("params_after")
    return 1.0 - last / first if first and last is not None else None


def lines(lineage: list[dict]) -> list[str]:
    """One line per stage, for summaries and comparison pages."""
    out = []
    for s in lineage:
        what = [f"params {_m(s.get('params_before'))} -> {_m(s.get('params_after'))}"
                + (f" ({_m(s['nonzero_after'])} non-zero)" if s.get("nonzero_after") not in (None, s.get("params_after"))
                   else "")]
        if s.get("layers_before") != s.get("layers_after") and s.get("layers_before") is not None:
            what.append(f"layers {s['layers_before']} -> {s['layers_after']}")
        if s.get("method") == RECOVER:
            what.append(f"{s['steps']} steps, {s['tokens_seen']:,} tokens of {s['data'].get('dataset')}")
        elif s.get("calibration"):
            c = s["calibration"]
            what.append(f"calibration {c['dataset']} {c['nsamples']} x {c['seqlen']} seed {c['seed']}")
        what += [f"{name} {ev['ppl']:.3f} [{ev['protocol']}]" for name, ev in s.get("eval", {}).items()]
        out.append(f"{s.get('stage', '?')}. {stage_label(s)}: " + "; ".join(what))
    return out


def _m(n) -> str:
    return "?" if n is None else f"{n / 1e6:.2f}M"


def describe_chain(lineage: list[dict]) -> dict:
    """A comparison's view of a multi-stage run: the stages' labels joined, and the fraction of the
    dense parameters the chain removed as the quality plot's x."""
    x = removed_fraction(lineage)
    return {"method": label(lineage), "what": f"{len(lineage)} stages" + (f", {x:.3f} of params" if x else ""),
            "x": x or 0.0}


def page_section(runs: list[dict]) -> list[str]:
    """The comparison page's lineage section: every multi-stage run's stages, one line each."""
    chains = [r for r in runs if len(r.get("lineage") or []) > 1]
    if not chains:
        return []
    out = ["", "## Lineage", ""]
    for r in chains:
        out += [f"**{r['_name']}** ({label(r['lineage'])}):", ""]
        out += [f"{line}  " for line in lines(r["lineage"])] + [""]
    return out
