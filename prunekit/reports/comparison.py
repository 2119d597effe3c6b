"""`prunekit compare`: one Markdown page over many runs' prunekit_report.json, with plots.

Every number keeps its protocol. A column holds one protocol only: when runs measured a
dataset under different protocols (window counts, sequence lengths, zero-shot limits, KL text,
benchmark settings) each protocol gets its own column and the page says so; nothing is
silently averaged across protocols."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import PrunekitError
from ..eval.zeroshot import average_stderr
from ..methods.registry import method_class


def load_runs(paths: list[str]) -> list[dict]:
    """The reports of `paths`, labelled uniquely: a run folder's name, with as many parent folders
    as it takes to tell runs apart that share it (a/wanda50, b/wanda50)."""
    runs = [load_run(p) for p in paths]
    folders = [_run_folder(p).parts for p in paths]
    depth = 1
    while depth < max(len(f) for f in folders):
        labels = ["/".join(f[-depth:]) for f in folders]
        if len(set(labels)) == len(labels):
            break
        depth += 1
    for r, f in zip(runs, folders):
        r["_name"] = "/".join(f[-depth:])
    return runs


def _run_folder(path: str) -> Path:
    p = Path(path).expanduser().resolve()
    return p if p.is_dir() else p.parent


def load_run(path: str) -> dict:
    p = Path(path)
    f = p / "prunekit_report.json" if p.is_dir() else p
    if not f.is_file():
        raise PrunekitError(f"{path}: no prunekit_report.json")
    try:
        report = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise PrunekitError(f"{f}: not valid JSON ({e.msg})") from None
    if not isinstance(report, dict):
        raise PrunekitError(f"{f}: not a prunekit report (a JSON {type(report).__name__})")
    report["_name"] = p.name if p.is_dir() else p.parent.name
    _check_fields(report, f)
    return report


def _check_fields(report, f: Path) -> None:
    """Read the run once as the page will, so a report lacking a field fails here in one line
    naming the file and the field, not in a KeyError traceback half-way through the page."""
    try:
        if not isinstance(report.get("model"), dict):
            raise KeyError("model")
        report["model"]["source"]
        table([report])
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        what = f"field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else f"a field ({type(e).__name__})"
        raise PrunekitError(f"{f}: not a complete prunekit report: it lacks {what}") from None


def describe(r: dict) -> dict:
    """Method, what was removed, and the x of the quality plot."""
    if len(r.get("lineage") or []) > 1:      # several stages, labelled by all of them (slm+search+lora)
        from .lineage import describe_chain
        return describe_chain(r["lineage"])
    if not r.get("method"):
        return {"method": "dense", "what": "-", "x": 0.0}
    cls = method_class(r["method"].get("name"))
    if cls is None:
        return {"method": r["method"].get("name", "?"), "what": "-", "x": (r.get("sparsity") or {}).get("overall", 0.0)}
    return cls.describe(r)


def _zs_key(zs: dict) -> tuple:
    where = "local" if str(zs.get("source", "")).startswith("local") else "hub"
    return (f"limit {zs['limit']}" if zs.get("limit") else "full", tuple(sorted(zs["tasks"])), where,
            zs.get("lm_eval"))


def _kl_key(kl: dict) -> str:
    d = kl["data"]
    split = f":{d['split']}" if d.get("split") else ""
    return f"{d['dataset']}{split} {d['nsamples']}x{d['seqlen']} seed {d['seed']} vs {kl.get('dense')}"


def _bench_key(b: dict) -> str:
    s = b["pruned"]["settings"]
    return f"{b['pruned']['device']} {s.get('dtype', 'float32')} {s.get('threads', '?')} threads 1x{s['seqlen']}"


def _columns(runs: list[dict]) -> dict:
    """Column keys per metric family: one per distinct protocol."""
    cols = {"ppl": [], "zero_shot": [], "kl": [], "bench": []}
    for r in runs:
        for name, ev in (r.get("eval") or {}).items():
            key = (name, ev["protocol"])
            if key not in cols["ppl"]:
                cols["ppl"].append(key)
        zs = r.get("zero_shot")
        if zs:
            key = _zs_key(zs)
            if key not in cols["zero_shot"]:
                cols["zero_shot"].append(key)
        kl = r.get("kl")
        if kl:
            key = _kl_key(kl)
            if key not in cols["kl"]:
                cols["kl"].append(key)
        b = r.get("bench")
        if b and "ratios" in b:
            key = _bench_key(b)
            if key not in cols["bench"]:
                cols["bench"].append(key)
    return cols


def _mixed_notes(cols) -> list[str]:
    notes = []
    by_ds = {}
    for ds, proto in cols["ppl"]:
        by_ds.setdefault(ds, []).append(proto)
    for ds, protos in by_ds.items():
        if len(protos) > 1:
            notes.append(f"**Mixed protocols for {ds} perplexity**: {', '.join(protos)}. Each has its own column; "
                         "numbers in different columns are not comparable.")
    if len(cols["zero_shot"]) > 1:
        notes.append("**Mixed zero-shot protocols** (" + "; ".join(f"{k[0]}, {k[2]} data, lm-eval {k[3]}, tasks {', '.join(k[1])}"
                                                                for k in cols["zero_shot"])
                     + "): separate columns.")
    if len(cols["kl"]) > 1:
        notes.append(f"**KL measured on different text**: {', '.join(cols['kl'])}: separate columns.")
    if len(cols["bench"]) > 1:
        notes.append(f"**Speed measured under different settings**: {', '.join(cols['bench'])}: separate columns.")
    return notes


def table(runs: list[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    cols = _columns(runs)
    head = ["run", "method", "pruned", "params"]
    head += [f"ppl {ds} [{proto}]" for ds, proto in cols["ppl"]]
    head += [f"zero-shot avg [{k[0]}]" for k in cols["zero_shot"]]
    head += [f"KL [{k.split(' vs ')[0]}]" for k in cols["kl"]]
    head += [f"prefill ratio [{k}]" for k in cols["bench"]]
    rows = []
    for r in runs:
        d = describe(r)
        row = [r["_name"], d["method"], d["what"], f"{r['model']['params_total'] / 1e6:.1f}M"]
        for ds, proto in cols["ppl"]:
            ev = (r.get("eval") or {}).get(ds)
            row.append(f"{ev['ppl']:.2f}" if ev and ev["protocol"] == proto else "")
        zs = r.get("zero_shot")
        for k in cols["zero_shot"]:
            row.append(f"{zs['average']:.4f} ± {average_stderr(zs):.3f}" if zs and _zs_key(zs) == k else "")
        kl = r.get("kl")
        for k in cols["kl"]:
            match = kl and _kl_key(kl) == k
            row.append(f"{kl['kl']:.4f} (top-1 {kl['top1_agreement']:.3f})" if match else "")
        b = r.get("bench")
        for k in cols["bench"]:
            match = b and "ratios" in b and _bench_key(b) == k
            row.append(f"{b['ratios']['prefill_latency']:.3f}" if match else "")
        rows.append(row)
    return head, rows, _mixed_notes(cols)


def _plot_quality(runs, cols, path):
    from ..plots import _pyplot
    plt = _pyplot()
    if not cols["ppl"]:
        return None
    ds, proto = cols["ppl"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    series = {}
    for r in runs:
        ev = (r.get("eval") or {}).get(ds)
        if ev and ev["protocol"] == proto:
            d = describe(r)
            series.setdefault(d["method"], []).append((d["x"], ev["ppl"]))
    dense = series.pop("dense", [])
    for m, pts in sorted(series.items()):
        pts = sorted(pts + dense)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    for x, y in dense:
        ax.axhline(y, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity (weight methods) or fraction of layers removed (depth methods)")
    ax.set_ylabel(f"{ds} perplexity [{proto}]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_zero_shot(runs, path):
    from ..plots import _pyplot
    plt = _pyplot()
    withzs = [r for r in runs if r.get("zero_shot")]
    if not withzs:
        return None
    tasks = list(withzs[0]["zero_shot"]["tasks"])
    fig, ax = plt.subplots(figsize=(max(7, len(tasks) * 1.3), 4.5), dpi=120)
    w = 0.8 / len(withzs)
    for k, r in enumerate(withzs):
        t = r["zero_shot"]["tasks"]
        vals = [t[x][t[x]["metric"]] if x in t else 0 for x in tasks]
        ax.bar([i + k * w for i in range(len(tasks))], vals, w, label=r["_name"])
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(tasks))])
    ax.set_xticklabels([f"{x}\n({withzs[0]['zero_shot']['tasks'][x]['metric']})" for x in tasks], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_speed(runs, cols, path):
    from ..plots import _pyplot
    plt = _pyplot()
    if not cols["ppl"] or not cols["bench"]:
        return None
    ds, proto = cols["ppl"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in runs:
        ev, b = (r.get("eval") or {}).get(ds), r.get("bench")
        if ev and ev["protocol"] == proto and b and "ratios" in b:
            ax.scatter(b["ratios"]["prefill_latency"], ev["ppl"])
            ax.annotate(r["_name"], (b["ratios"]["prefill_latency"], ev["ppl"]), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(f"prefill latency / dense [{cols['bench'][0]}]")
    ax.set_ylabel(f"{ds} perplexity [{proto}]")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_page(paths: list[str], output: str) -> Path:
    import os
    from ..export import staging
    from ..export.stale import remove_stale_temporaries

    runs = load_runs(paths)
    out = Path(output)
    if out.suffix != ".md":
        raise PrunekitError(f"--output {output}: give a .md file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    head, rows, notes = table(runs)
    cols = _columns(runs)
    stem = out.stem
    remove_stale_temporaries(out.parent / stem)     # a killed compare's folder: named for the stem, as below
    tmpdir = staging.temporary(out.parent / stem)
    try:
        plots = {"quality": _plot_quality(runs, cols, tmpdir / f"{stem}-quality.png"),
                 "zero_shot": _plot_zero_shot(runs, tmpdir / f"{stem}-zero-shot.png"),
                 "speed": _plot_speed(runs, cols, tmpdir / f"{stem}-speed.png")}
        lines = [f"# prunekit comparison: {len(runs)} runs", ""]
        sources = sorted({r["model"]["source"] for r in runs})
        lines += [f"Models pruned from: {', '.join(sources)}. Perplexity protocols are named in each column "
                  "header (`wt2-2048/16`: WikiText-2 test, 2048-token windows, first 16). Zero-shot average: acc for "
                  "BoolQ, PIQA, WinoGrande, ARC-e; acc_norm for HellaSwag, ARC-c, OpenBookQA; ± its standard error "
                  "(averages closer than about twice that are not told apart). KL: KL(dense || run) per "
                  "token. Prefill ratio: run / dense latency, measured in the same `prunekit bench` call.", ""]
        lines += [f"> {n}" for n in notes] + ([""] if notes else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        from .lineage import page_section
        lines += page_section(runs)
        zs_runs = [r for r in runs if r.get("zero_shot")]
        if zs_runs:
            tasks = list(zs_runs[0]["zero_shot"]["tasks"])
            lines += ["", "## Zero-shot accuracy per task", "",
                      "| run | limit | " + " | ".join(f"{t} ({zs_runs[0]['zero_shot']['tasks'][t]['metric']})" for t in tasks)
                      + " | average |", "|" + "---|" * (len(tasks) + 3)]
            for r in zs_runs:
                t = r["zero_shot"]["tasks"]
                lines.append(f"| {r['_name']} | {r['zero_shot'].get('limit') or 'full'} | "
                             + " | ".join(f"{t[x][t[x]['metric']]:.4f}" if x in t else "" for x in tasks)
                             + f" | {r['zero_shot']['average']:.4f} |")
        titles = {"quality": "Perplexity against sparsity or depth removed", "zero_shot": "Zero-shot accuracy per task",
                  "speed": "Speed against quality"}
        for key, p in plots.items():
            if p:
                lines += ["", f"## {titles[key]}", "", f"![{titles[key]}]({p.name})"]
        (tmpdir / out.name).write_text("\n".join(lines) + "\n")
        for p in plots.values():   # plots first, the page last: a page on disk means a complete set
            if p:
                os.replace(p, out.parent / p.name)
        os.replace(tmpdir / out.name, out)
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out
