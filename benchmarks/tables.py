"""The tables of BENCHMARKS.md that are derived from `benchmarks/results/*.json`, one function per
table. Each takes a `Results` (the results folder, read lazily) and returns the table's Markdown,
exactly as it stands between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in BENCHMARKS.md.
The registry (`benchmarks/registry.py`) names each function in the entry of the experiment that
writes its results; `python -m benchmarks tables` rewrites the marked tables from them.

Where a script already prints its table from its results (`table(reports)`), the function here
calls it; otherwise it formats the published table's own columns. Nothing here runs a model."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS_KEY = "_runs"      # the runner's provenance records inside a results file (not an experiment's row)


class Results:
    """The results folder: `load(name)` reads results/<name>.json without the runner's records."""

    def __init__(self, folder: Path | str = HERE / "results"):
        self.folder = Path(folder)
        self._cache: dict[str, dict] = {}

    def load(self, name: str) -> dict:
        if name not in self._cache:
            data = json.loads((self.folder / f"{name}.json").read_text())
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k != RUNS_KEY}
            self._cache[name] = data
        return self._cache[name]

    def lines(self, name: str) -> list[dict]:
        """results/<name> as JSON lines (a times log)."""
        return [json.loads(l) for l in (self.folder / name).read_text().splitlines() if l.strip()]


@lru_cache(maxsize=None)
def script(path: str):
    """A benchmark script as a module (for its `table` function), without running its main."""
    file = HERE / path
    for folder in (str(HERE), str(file.parent)):      # the scripts import their sibling `runner`
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"_benchmark_{file.stem}", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- formatting helpers

def bold(cell: str) -> str:
    return f"**{cell}**"


def bold_min(cells: list[str], values: list[float | None]) -> list[str]:
    """The cell of the smallest value in bold."""
    known = [v for v in values if v is not None]
    best = min(known) if known else None
    return [bold(c) if v is not None and v == best else c for c, v in zip(cells, values)]


def ppl(x: float) -> str:
    """Perplexity as the depth tables print it: two decimals, 1e6 and above as 6.7e9."""
    if x >= 1e6:
        mant, exp = f"{x:.1e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{x:.2f}"


def blocks(ids: list[int], collapse: int = 5) -> str:
    """Block indices; runs of `collapse` or more consecutive blocks as a range (3, 12-18, 25)."""
    ids, out, i = sorted(ids), [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out += [f"{ids[i]}-{ids[j]}"] if j - i + 1 >= collapse else [str(k) for k in ids[i:j + 1]]
        i = j + 1
    return ", ".join(out)


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def head(*names: str) -> list[str]:
    return [row(names), "|" + "---|" * len(names)]


def depth_choice(report: dict, collapse: int = 5) -> str:
    """'merged 13-14, 17-18' or 'removed 12, 13, 14' from a depth report's groups."""
    d = report["method"]["depth"]
    merged = [f"{g[0]}-{g[-1]}" for g in d["groups"] if len(g) > 1]
    if merged:
        return "merged " + ", ".join(merged)
    kept = {i for g in d["groups"] for i in g}
    return "removed " + blocks([i for i in range(d["layers_before"]) if i not in kept], collapse)


# ---------------------------------------------------------------- sparsity: SparseLLM on the CPU

def _ffn_error(report: dict) -> tuple[float, float, int, int]:
    hist = report["method"]["ffn_relative_error"]
    first = sum(v[0] for v in hist.values()) / len(hist)
    last = sum(v[-1] for v in hist.values()) / len(hist)
    return first, last, sum(v[-1] < v[0] for v in hist.values()), len(hist)


def _sparsellm_cells(reports: dict) -> dict:
    cells = {}
    for r in reports.values():
        if r.get("method"):
            cfg = r["method"]["config"]
            target = cfg["pattern"] or f"{cfg['sparsity']:.0%}"
            cells.setdefault(target, {})[r["method"]["name"]] = r
    return cells


TARGET_LABEL = {"1:4": '1:4 ("3:4")'}


def sparsellm_cpu_all(res: Results) -> str:
    lines = head("target", "blocks", "Wanda", "SparseGPT", "SparseLLM",
                 "SparseLLM FFN error (mean over blocks, it. 1 → 4)", "prune s (Wanda / SparseGPT / SparseLLM)",
                 "protocol")
    for target, by in _sparsellm_cells(res.load("cpu-all")).items():
        methods = [by[m] for m in ("wanda", "sparsegpt", "sparsellm")]
        values = [r["eval"]["wikitext2"]["ppl"] for r in methods]
        first, last, falls, n = _ffn_error(by["sparsellm"])
        calib = by["sparsellm"]["calibration"]
        lines.append(row([TARGET_LABEL.get(target, target), f"all {n}", *bold_min([f"{v:.2f}" for v in values], values),
                          f"{first:.3f} → {last:.3f}, falls in {falls}/{n} blocks",
                          " / ".join(f"{r['timing']['prune_s']:.0f}" for r in methods),
                          f"C4 {calib['nsamples']}×{calib['seqlen']}, {methods[0]['eval']['wikitext2']['protocol']}"]))
    return "\n".join(lines)


def sparsellm_cpu_first_half(res: Results) -> str:
    """The script's own table, with the published labels of the targets and of the first half."""
    table = script("sparsellm_vs_baselines.py").table(res.load("cpu-firsthalf"))
    lines = table.split("\n")[2:]          # without the dense line: the text above the table gives it
    return "\n".join(l.replace("| first-half |", "| first-half (0-14) |").replace("| 1:4 |", '| 1:4 ("3:4") |')
                     for l in lines)


def peer_llmcompressor(res: Results) -> str:
    return script("peers/compare_llmcompressor.py").table(res.load("peer_llmcompressor"))


# ---------------------------------------------------------------- depth

DEPTH_LABELS = {"slm-rdsc": "slm (rdsc)", "slm-top": "slm (top)"}


def depth_methods(res: Results) -> str:
    reports = res.load("depth_methods")
    lines = head("removed", "method", "layers", "params", "wt2 ppl", "threshold", "prune s", "merged / removed blocks")
    by_k: dict[int, list] = {}
    for tag, r in reports.items():
        if tag != "dense":
            by_k.setdefault(r["method"]["depth"]["layers_removed"], []).append((tag, r))
    for k, runs in by_k.items():
        values = [r["eval"]["wikitext2"]["ppl"] for _, r in runs]
        for (tag, r), cell in zip(runs, bold_min([ppl(v) for v in values], values)):
            method = tag.split("-", 1)[1].rsplit("-", 1)[0]
            thr = r["method"].get("threshold")
            lines.append(row([k, DEPTH_LABELS.get(method, method), r["method"]["depth"]["layers_after"],
                              f"{r['model']['params_total'] / 1e6:.1f}M", cell, "" if thr is None else f"{thr:.3f}",
                              f"{r['timing']['prune_s']:.0f}", depth_choice(r)]).replace("|  |", "| |"))
    return "\n".join(lines)


def slm_ablation(res: Results) -> str:
    rows, depth = res.load("slm_ablation"), res.load("depth_methods")
    lines = head("removed", "SLM merged (top projections, base norms)", "same windows, top block kept",
                 "same windows, base block kept", "best removal baseline")
    for tag, r in rows.items():
        k = len(r["top_removed"])
        removal = [(depth[f"depth-{m}-{k}"]["eval"]["wikitext2"]["ppl"], name)
                   for m, name in (("shortgpt", "ShortGPT"), ("sleb", "SLEB"), ("ppl", "PPL"))]
        best, name = min(removal)
        lines.append(row([k, f"{r['merged']:.2f}", f"{r['top']:.2f}", f"{r['base']:.2f}", f"{best:.2f} ({name})"]))
    return "\n".join(lines)


def _bench_row(ratios: dict) -> tuple[float, float, float]:
    return ratios["params"], ratios["prefill_latency"], ratios["decode_tokens_per_s"]


def depth_bench(res: Results) -> str:
    bench = res.load("depth_bench")
    lines = head("removed", "kept layers", "params and disk ratio", "prefill latency ratio (per method)",
                 "decode tok/s ratio")
    by_k: dict[int, list] = {}
    for tag, b in bench.items():
        if not tag.endswith(":dense"):
            by_k.setdefault(int(tag.rsplit("-", 1)[1]), []).append((tag.split("-", 1)[1].rsplit("-", 1)[0], b["ratios"]))
    for k, runs in by_k.items():
        decode = [r["decode_tokens_per_s"] for _, r in runs]
        lines.append(row([k, f"{runs[0][1]['layers']:.3f}", f"{runs[0][1]['params']:.3f}",
                          ", ".join(f"{m} {r['prefill_latency']:.3f}" for m, r in runs),
                          f"{min(decode):.2f}-{max(decode):.2f}"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- width

WIDTH_VARIANTS = {"search": "search + ADMM", "search-noreform": "search, no reformation",
                  "init": "importance init (`--generations 0`) + ADMM", "magnitude": "structured magnitude + ADMM"}


def _fit(x: float) -> str:
    return f"{x:.0f}" if x >= 1e5 else f"{x:.1f}"


def width_search(res: Results) -> str:
    reports = res.load("width_search")
    lines = head("keep", "variant", "kept block params", "params", "wt2 ppl", "fitness ppl (init → best)", "search s",
                 "prune s")
    by_keep: dict[float, list] = {}
    for tag, r in reports.items():
        if tag != "dense":
            by_keep.setdefault(r["method"]["config"]["keep"], []).append((tag, r))
    for keep, runs in by_keep.items():
        values = [r["eval"]["wikitext2"]["ppl"] for _, r in runs]
        for (tag, r), cell in zip(runs, bold_min([f"{v:.2f}" for v in values], values)):
            m = r["method"]
            start, end = m.get("initial_fitness", m.get("initial_fitness_ppl")), m.get("final_fitness", m.get("fitness_ppl"))
            fitness = _fit(start) if m["evaluations"] == 1 else f"{_fit(start)} → {_fit(end)}"
            lines.append(row([keep, WIDTH_VARIANTS[tag.split("-", 1)[1].rsplit("-", 1)[0]], f"{m['kept_fraction']:.4f}",
                              f"{r['model']['params_total'] / 1e6:.1f}M", cell, fitness, f"{m['search_s']:.0f}",
                              f"{r['timing']['prune_s']:.0f}"]))
    return "\n".join(lines)


WIDTH_BENCH_LABELS = {"search": "search", "init": "importance init", "magnitude": "structured magnitude"}


def width_bench(res: Results) -> str:
    bench = res.load("width_bench")
    lines = head("model", "params ratio", "disk ratio", "prefill latency ratio", "decode tok/s ratio")
    for tag, b in bench.items():
        if tag.endswith(":dense"):
            continue
        variant, keep = tag.split("-", 1)[1].rsplit("-", 1)
        r = b["ratios"]
        lines.append(row([f"{WIDTH_BENCH_LABELS[variant]}, keep {keep}", f"{r['params']:.3f}", f"{r['disk']:.3f}",
                          f"{r['prefill_latency']:.3f}", f"{r['decode_tokens_per_s']:.3f}"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- zero-shot

def lm_eval_check(res: Results) -> str:
    lines = head("task", "metric", "prunekit", "lm_eval CLI")
    for r in res.load("lm_eval_check")["rows"]:
        lines.append(row([r["task"], r["metric"], f"{r['prunekit']:.4f}", f"{r['lm_eval_cli']:.4f}"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- evolutionary search

def evo_sparsity(res: Results) -> str:
    e = res.load("evo_search")
    lines = head("mean sparsity", "uniform SparseGPT (sequential)", "OWL + SparseGPT",
                 "**evo-sparsity** (database on the uniformly pruned prefix, the default)",
                 "calibration KL, start → end", "evo-sparsity, database on dense inputs (first design)",
                 "its start: every block at the target", "calibration KL, start → end")
    for pct in (70, 80):
        p = {k: e[f"{k}-{pct}"]["eval"]["wikitext2"]["ppl"] for k in
             ("uniform-sparsegpt", "owl-sparsegpt", "evo-sparsity", "evo-sparsity-dense", "evo-sparsity-dense-start")}
        evo, dense = e[f"evo-sparsity-{pct}"]["method"], e[f"evo-sparsity-dense-{pct}"]["method"]
        first = bold_min([f"{p[k]:.2f}" for k in ("uniform-sparsegpt", "owl-sparsegpt", "evo-sparsity")],
                         [p[k] for k in ("uniform-sparsegpt", "owl-sparsegpt", "evo-sparsity")])
        lines.append(row([f"{pct}%", *first, f"{evo['initial_fitness']:.4f} → {evo['final_fitness']:.4f}",
                          f"{p['evo-sparsity-dense']:.2f}", f"{p['evo-sparsity-dense-start']:.2f}",
                          f"{dense['initial_fitness']:.4f} → {dense['final_fitness']:.4f}"]))
    return "\n".join(lines)


EXECUTORS = {"exec-local": "in-process (`--executor local`)", "exec-workers2": "`--workers 2` (local processes)",
             "exec-ray2": "`--executor ray --workers 2` (local cluster)"}


def evo_executors(res: Results) -> str:
    e = res.load("evo_search")
    lines = head("executor", "search s", "prune s", "peak RSS (main process)", "removed blocks", "fitness history")
    first = None
    for tag, label in EXECUTORS.items():
        r = e[tag]
        m = r["method"]
        choice = ", ".join(map(str, m["removed"]))
        history = ", ".join(f"{h['best']:.6f}" for h in m["history"])
        if first is None:
            first = (choice, history)
        lines.append(row([label, f"{m['search_s']:.1f}", f"{r['timing']['prune_s']:.1f}",
                          f"{r['timing']['peak_rss_gb']:.2f} GB", choice if first[0] != choice or tag == "exec-local"
                          else "same", history if first[1] != history or tag == "exec-local" else "same"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- recovery

RECOVERY_ORDER = ("depth-slm-6", "depth-slm-10", "depth-shortgpt-6", "depth-shortgpt-10", "depth-sleb-6",
                  "depth-sleb-10", "combo-0.79-depth", "combo-0.79-width", "combo-0.79-both",
                  "combo-0.79-depth-shortgpt", "combo-0.79-both-shortgpt", "combo-0.66-depth-shortgpt",
                  "combo-0.66-both-shortgpt", "combo-0.66-depth", "combo-0.66-width", "combo-0.66-both",
                  "sparse-wanda-0.5", "sparse-wanda-2of4")


def recovery(res: Results) -> str:
    rows = res.load("recovery_bench")
    return script("recovery_bench.py").table({tag: rows[tag] for tag in RECOVERY_ORDER if tag in rows})


def distill(res: Results) -> str:
    mod = script("distill_bench.py")
    return mod.table(mod.ordered(res.load("distill_bench")))


def shape(res: Results) -> str:
    mod = script("shape_bench.py")
    rows = res.load("shape_bench")
    return mod.table(mod.ordered(rows))


def shape_serving(res: Results) -> str:
    return script("shape_serving.py").table(res.load("shape_serving"))


def shape_refine(res: Results) -> str:
    return script("shape_refine_check.py").table(res.load("shape_refine_check"))


def shape_cost(res: Results) -> str:
    return script("shape_bench.py").cost_table(res.load("shape_bench"))


def _span(values: list[int]) -> str:
    return f"{min(values)}-{max(values)}" if min(values) != max(values) else str(values[0])


def evo_width_multiples(res: Results) -> str:
    """search-llm (ppl fitness) with free widths against widths rounded to multiples of 64 and 32; the
    speed ratios from the paired rounds of evo_width_bench.json (the multiple-32 run timed separately)."""
    e = res.load("evo_search")
    bench = {**res.load("evo_width_bench"), **res.load("evo_width_bench_m32")}
    runs = []
    for tag in ("width-ppl", "width-ppl-m64", "width-ppl-m32"):
        m = e[tag]["method"]
        multiple = m["config"].get("width_multiple") or 1
        heads, mlp = m["widths"]["head_dim"], m["widths"]["mlp"]
        chosen = " chosen" if min(heads) == max(heads) and multiple < heads[0] else ""
        label = "free" if multiple == 1 else f"`--width-multiple {multiple}`"
        runs.append((f"{label} (head dims {_span(heads)}{chosen}, MLP {_span(mlp)})", m["kept_fraction"],
                     bench[tag]["ratios"], e[tag]["eval"]["wikitext2"]["ppl"]))
    cols = {"ppl": bold_min([f"{r[3]:.2f}" for r in runs], [r[3] for r in runs]),
            "prefill": bold_min([f"{r[2]['prefill_latency']:.3f}" for r in runs], [r[2]["prefill_latency"] for r in runs]),
            "decode": bold_min([f"{r[2]['decode_tokens_per_s']:.3f}" for r in runs],
                               [-r[2]["decode_tokens_per_s"] for r in runs])}
    lines = head("widths", "kept block params", "params vs dense", "wt2 ppl", "prefill latency vs dense",
                 "decode tokens/s vs dense")
    for i, (label, kept, ratios, _) in enumerate(runs):
        lines.append(row([label, f"{kept:.4f}", f"{ratios['params']:.3f}", cols["ppl"][i], cols["prefill"][i],
                          cols["decode"][i]]))
    return "\n".join(lines)


def stream_rand15b_blocks(res: Results) -> str:
    """Seconds per block of the SparseGPT 2:4 run on rand-15b, from its times log (killed after block 4)."""
    lines = head("block", "seconds")
    for t in res.lines("streaming/sparsegpt24-rand15b-bf16-times.jsonl"):
        label = "1 (also reads the embedding and calibrates)" if t["unit"] == 0 else t["unit"] + 1
        lines.append(row([label, f"{t['seconds']:.1f}"]))
    return "\n".join(lines)


def _shortened(cell: str, keep: int = 4, most: int = 6) -> str:
    """A depth-table cell in a "removed blocks" column: removals as the bare list, more than `most`
    merged windows cut to the first `keep` and '...'."""
    what, _, items = cell.partition(" ")
    parts = items.split(", ")
    if what == "removed":           # the column says "removed blocks"
        return items
    return cell if len(parts) <= most else f"{what} {', '.join(parts[:keep])}, ..."


def evo_depth(res: Results) -> str:
    """evo-depth and ShortGPT on the search's own calibration, then the depth table's baselines (SLEB,
    ShortGPT, SLM rdsc on their 10 x 128 windows) by perplexity; this search's rows list every block."""
    e, depth = res.load("evo_search"), res.load("depth_methods")
    lines = head("removed", "method", "calibration", "wt2 ppl", "removed blocks",
                 "KL to dense on the search's fixed 2048 tokens")

    def calib(r):
        return f"C4 {r['calibration']['nsamples']} × {r['calibration']['seqlen']}"

    for k in (6, 10):
        evo, start = e[f"evo-depth-{k}"], e[f"shortgpt-same-calib-{k}"]
        m = evo["method"]
        base = sorted((depth[f"depth-{t}-{k}"] for t in ("sleb", "shortgpt", "slm-rdsc")),
                      key=lambda r: r["eval"]["wikitext2"]["ppl"])
        best = min(r["eval"]["wikitext2"]["ppl"] for r in [evo, start, *base])

        def wt2(r):      # the lowest perplexity of the rows removing k blocks in bold
            v = r["eval"]["wikitext2"]["ppl"]
            return bold(f"{v:.2f}") if v == best else f"{v:.2f}"

        lines.append(row([k, f"**evo-depth** ({m['generations']} generations, {m['search_s']:.0f} s search)", calib(evo),
                          wt2(evo), blocks(m["removed"], collapse=len(m["removed"]) + 1),
                          f"{m['initial_fitness']:.4f} → {m['final_fitness']:.4f}"]))
        removed = start["method"]["removed"]
        lines.append(row([k, "ShortGPT, same calibration (the start)", calib(start),
                          wt2(start), blocks(removed, collapse=len(removed) + 1),
                          f"{m['initial_fitness']:.4f}"]))
        for r in base:
            name = {"sleb": "SLEB", "shortgpt": "ShortGPT", "slm": "SLM (rdsc)"}[r["method"]["name"]]
            lines.append(row([k, name, calib(r), wt2(r), _shortened(depth_choice(r)), ""])
                         .replace("|  |", "| |"))
    return "\n".join(lines)


# ---------------------------------------------------------------- serving

SERVING_LABELS = {"dense": "dense", "shortgpt-6": "ShortGPT-6 (whole blocks)",
                  "shortgpt-sublayer-0.8": "ShortGPT by sublayer, keep 0.8", "sleb-sublayer-0.8": "SLEB by sublayer, keep 0.8",
                  "ppl-sublayer-0.8": "PPL by sublayer, keep 0.8", "width-mlp-0.85": "search-llm MLP only, keep 0.85",
                  "width-mlp-0.7": "search-llm MLP only, keep 0.7", "width-kv-0.85": "search-llm KV groups, keep 0.85",
                  "width-kv-0.7": "search-llm KV groups, keep 0.7",
                  "width-within-heads-0.8": "search-llm within heads (prunekit layout), keep 0.8",
                  "kvfit-mean-init-0.85": "KV groups, importance init only, no reformation, mean fit, keep 0.85",
                  "kvfit-weighted-init-0.85": "KV groups, importance init only, no reformation, weighted fit, keep 0.85",
                  "qwen2-decilm-probe": "random Qwen2 probe (q/k/v biases)"}


def _engine_cell(e: dict, kind: str) -> str:
    if not e:
        return ""
    if e.get("error"):
        msg = e["error"]
        msg = msg[msg.rfind(" ", 0, max(0, msg.find("Error"))) + 1:]           # from the exception's name
        msg = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", msg)              # a class by its own name
        return f"fails: {msg[:110]}"
    if kind == "vllm":
        native = "native" if e.get("native") else "fallback"
        return f"{e['class']} ({native}); tokens {'=' if e['same_tokens'] else '≠'} HF"
    fallback = ", vocab fallback" if e.get("vocab_fallback") else ""
    return (f"{e['arch']}{fallback}; tokens {'=' if e['same_tokens'] else '≠'} HF; "
            f"max Δlogit {e['max_abs_logit_diff']:.3g}")


def _speed_cell(speed: dict, dense: dict) -> str:
    if not speed or not dense:
        return ""
    return f"{dense['prefill_s'] / speed['prefill_s']:.2f}× / {speed['decode_tok_s'] / dense['decode_tok_s']:.2f}×"


def servable_outputs(res: Results) -> str:
    data = res.load("servable_outputs")
    lines = head("model", "kept block params", "params", "wt2 ppl", "KL", "vLLM", "llama.cpp (f32 GGUF)",
                 "vLLM prefill / decode speed vs dense", "llama.cpp prefill / decode speed vs dense")
    dense_speed = (data.get("dense") or {}).get("speed") or {}
    for tag, label in SERVING_LABELS.items():
        r = data.get(tag)
        if not r:
            continue
        q, e, sp = r.get("quality") or {}, r.get("engines") or {}, r.get("speed") or {}
        kept = q.get("kept_block_params")
        llamacpp = _engine_cell(e.get("llamacpp") or {}, "llamacpp")
        if e.get("llamacpp_export"):
            x = e["llamacpp_export"]
            llamacpp += (f"; after `prunekit export --for llama.cpp` (+{x['params_added'] / 1e6:.2f}M zeros): "
                         + _engine_cell(x, "llamacpp"))
        lines.append(row([label, "" if kept is None else f"{kept:.3f}",
                          f"{q['params'] / 1e6:.1f}M" if q.get("params") else "",
                          "" if q.get("wt2") is None else f"{q['wt2']:.2f}",
                          "" if q.get("kl") is None else f"{q['kl']:.3f}",
                          _engine_cell(e.get("vllm") or {}, "vllm"), llamacpp,
                          _speed_cell(sp.get("vllm"), dense_speed.get("vllm")) if tag != "dense" else "1 / 1",
                          _speed_cell(sp.get("llamacpp"), dense_speed.get("llamacpp")) if tag != "dense" else "1 / 1"]))
    return "\n".join(lines)
