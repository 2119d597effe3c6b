"""Benchmark: evo-shape on SmolLM2-135M against whole-block removal, removal by sublayer and
servable width search at the same kept fraction of the block linears.

    python benchmarks/shape_bench.py --runs shape-0.8,shortgpt-6
    python benchmarks/shape_bench.py --table

Every model is pruned by its own `prunekit prune` process (calibration: 32 C4-train windows of
512 tokens for evo-shape and search-llm, 10 of 128 for the depth methods, as in the other
benchmarks), then evaluated: WikiText-2 test perplexity on the first 16 windows of 2048 tokens
(never seen by any search) and KL(dense || model) on 8 held-out C4-validation windows of 512.
Writes results/shape_bench.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import distill_bench
import runner

DEPTH_CAL = ["--calib", "c4", "--nsamples", "10", "--seqlen", "128", "--seed", "0"]
WIDTH_CAL = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", "0"]
SEARCH = ["--generations", "4", "--width-multiple", "256"]
# evo-shape's own defaults (stages 2048:4,16384:1, 16 offspring, 50 generations) take hours per
# budget on one CPU core; this benchmark runs a shorter search and says so in its table.
SHAPE_SEARCH = ["--stages", "512:4,2048:1", "--offspring", "8", "--generations", "20"]


# the library's variants trained by local distillation (BLD): 32 steps of one window at lr 3e-3 on the
# first 8 calibration windows, each kept where its error falls on the next 8
REFINE = ["--refine-steps", "32", "--refine-lr", "3e-3"]


def _shape(keep: str, *extra: str) -> list[str]:
    return ["--method", "evo-shape", "--keep", keep, *WIDTH_CAL, *SHAPE_SEARCH, *extra]


def _width(keep: str, attention: str, search=SEARCH) -> list[str]:
    return ["--method", "search-llm", "--attention", attention, "--keep", keep, *WIDTH_CAL, *search]


def _sublayer(method: str, keep: str) -> list[str]:
    return ["--method", method, "--unit", "sublayer", "--keep", keep, *DEPTH_CAL]


UNIFORM = ["--generations", "0", "--width-multiple", "256"]
# evo-depth as evo_search.py runs it (its defaults take hours on one core)
EVO_DEPTH = ["--method", "evo-depth", "--calib", "c4", "--nsamples", "32", "--seqlen", "128", "--seed", "0",
             "--stages", "512:2,2048:1", "--generations", "12", "--offspring", "8"]
RUNS = {
    "shape-0.8": _shape("0.8"),
    "shape-bld-0.8": _shape("0.8", *REFINE),
    "shortgpt-6": ["--method", "shortgpt", "--remove-layers", "6", *DEPTH_CAL],                 # 0.8 of the blocks
    "evo-depth-6": [*EVO_DEPTH, "--remove-layers", "6"],
    "shortgpt-sublayer-0.8": _sublayer("shortgpt", "0.8"),
    "sleb-sublayer-0.8": _sublayer("sleb", "0.8"),
    "width-mlp-0.8": _width("0.8", "keep"),
    "width-kv-0.8": _width("0.8", "kv-groups"),
    "uniform-mlp-0.8": _width("0.8", "keep", UNIFORM),
    # equal MLP widths in every block (the library's channels and reformation): 1024 and 1280 bracket 0.8
    "equal-mlp-1024": ["--method", "evo-shape", "--shape", "shapes/equal-mlp-1024.json", *WIDTH_CAL],
    "equal-mlp-1280": ["--method", "evo-shape", "--shape", "shapes/equal-mlp-1280.json", *WIDTH_CAL],
    "shape-0.65": _shape("0.65"),
    "shape-bld-0.65": _shape("0.65", *REFINE),
    "shortgpt-10": ["--method", "shortgpt", "--remove-layers", "10", *DEPTH_CAL],               # 0.667
    "evo-depth-10": [*EVO_DEPTH, "--remove-layers", "10"],
    "shortgpt-sublayer-0.65": _sublayer("shortgpt", "0.65"),
    "sleb-sublayer-0.65": _sublayer("sleb", "0.65"),
    "width-mlp-0.65": _width("0.65", "keep"),
    "width-kv-0.65": _width("0.65", "kv-groups"),
    "uniform-mlp-0.65": _width("0.65", "keep", UNIFORM),
}
# search cost: the same short search in this process and in two worker processes (both cores free)
COST_SEARCH = ["--method", "evo-shape", "--keep", "0.8", *WIDTH_CAL, "--stages", "512:4,2048:1", "--offspring", "8",
               "--generations", "2", "--eval", "none"]
COST_RUNS = {"cost-in-process": COST_SEARCH, "cost-workers-2": [*COST_SEARCH, "--workers", "2"]}
KL = ["--eval", "kl", "--kl-data", "c4:validation", "--kl-nsamples", "8", "--kl-seqlen", "512"]


# distill_bench's best mode, and local (BLD) then full-kd, at its 20-step budget (20 480 tokens)
RECOVERIES = ("full-kd", "local-full-kd")


def recovered(tag: str, mode: str) -> str:
    return f"{tag}+{mode}"


def recover(work: Path, tag: str, mode: str, args) -> Path:
    """`prunekit recover` of run folder `tag` as distill_bench.py's `mode` at 20 steps."""
    out = work / recovered(tag, mode)
    if not (out / "prunekit_report.json").exists():
        runner.run(runner.PRUNEKIT + ["recover", *runner.eval_args(str(work / tag), args.eval_windows),
                                      "--trust-remote-code", *distill_bench.recovery_flags(20),
                                      *distill_bench.MODES[mode], "--output", str(out)])
    return out


def run_one(work: Path, tag: str, args) -> None:
    out = work / tag
    if tag in COST_RUNS:
        if not (out / "prunekit_report.json").exists():
            runner.prune(work, tag, args.model, args.eval_windows, [*COST_RUNS[tag], "--trust-remote-code"])
        return
    if "+" in tag:
        out = recover(work, *tag.split("+"), args)
    if tag == "dense":          # one evaluation: perplexity and zero-shot, no model folder
        zs = ["--tasks", "all", "--limit", str(args.zero_shot)] if args.zero_shot else []
        runner.run(runner.PRUNEKIT + ["eval", *runner.eval_args(args.model, args.eval_windows), *zs,
                                      "--output", str(out)])
        return
    elif not (out / "prunekit_report.json").exists():
        runner.prune(work, tag, args.model, args.eval_windows, [*RUNS[tag], "--trust-remote-code"])
    rep = json.loads((out / "prunekit_report.json").read_text())
    if not ((rep.get("eval") or {}).get("kl") or rep.get("kl")):
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(out), *KL, "--trust-remote-code", "--save-to-model"])
    if args.zero_shot and (rep.get("zero_shot") or {}).get("limit") != args.zero_shot:
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(out), "--eval", "none", "--tasks", "all", "--limit",
                                      str(args.zero_shot), "--trust-remote-code", "--save-to-model"])


def without_boolq(zs: dict | None) -> float | None:
    """The zero-shot average over the six tasks other than BoolQ (BoolQ at 50 examples swings by
    0.4 between models of similar perplexity here)."""
    if not zs or not zs.get("tasks"):
        return None
    vals = [v[v["metric"]] for k, v in zs["tasks"].items() if k != "boolq"]
    return sum(vals) / len(vals)


def row(work: Path, tag: str) -> dict | None:
    path = work / tag / "prunekit_report.json"
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    if "wikitext2" not in (rep.get("eval") or {}):
        return None                 # still being evaluated
    zs = (rep.get("zero_shot") or {}).get("average")
    zs_nb = without_boolq(rep.get("zero_shot"))
    if tag == "dense":
        return {"tag": tag, "method": "dense", "kept_block_fraction": 1.0, "params": rep["model"]["params_total"],
                "ppl": rep["eval"]["wikitext2"]["ppl"], "protocol": rep["eval"]["wikitext2"]["protocol"],
                "kl": 0.0, "zero_shot": zs, "zero_shot_no_boolq": zs_nb, "prune_s": 0.0, "layout": "llama"}
    kl = (rep.get("eval") or {}).get("kl") or rep.get("kl") or {}
    if "+" in tag:
        base = row(work, tag.split("+")[0])
        rec = rep["recovery"]
        return {**base, "tag": tag, "method": f"{base['method']} + {tag.split('+')[1]} ({rec['tokens_seen']} tokens)",
                "params": rep["model"]["params_total"], "ppl": rep["eval"]["wikitext2"]["ppl"],
                "protocol": rep["eval"]["wikitext2"]["protocol"], "kl": kl.get("kl"), "zero_shot": zs,
                "zero_shot_no_boolq": zs_nb, "prune_s": rec["wall_s"]}
    meth = rep["method"]
    kept = meth.get("kept_fraction")
    if kept is None and (meth.get("depth") or {}).get("kept_params"):
        kept = meth["depth"]["kept_params"] / meth["depth"]["block_params"]
    if kept is None and meth.get("depth"):
        kept = meth["depth"]["layers_after"] / meth["depth"]["layers_before"]
    out = {"tag": tag, "method": meth["name"], "kept_block_fraction": kept, "params": rep["model"]["params_total"],
           "ppl": rep["eval"]["wikitext2"]["ppl"], "protocol": rep["eval"]["wikitext2"]["protocol"],
           "kl": kl.get("kl"), "zero_shot": zs, "zero_shot_no_boolq": zs_nb, "prune_s": rep["timing"]["prune_s"], "layout": rep["model"]["serving"]["layout"]}
    if meth["name"] == "evo-shape" and "final_fitness" in meth:      # searched, not a saved shape applied
        u = meth["uniform_starts"][meth["uniform_best"]]
        out.update(shape=meth["shape"], library_mb=meth["library"]["bytes"] / 1e6,
                   library_built=meth["library"]["built_now"], uniform=u, start_fitness=meth["initial_fitness"],
                   final_fitness=meth["final_fitness"], evaluations=meth["evaluations"],
                   search_s=meth["search_s"], executor=meth["executor"], refined=meth["library"].get("refined"))
    return out


def cost_row(work: Path, tag: str) -> dict | None:
    path = work / tag / "prunekit_report.json"
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    m = rep["method"]
    return {"tag": tag, "executor": m["executor"], "search_s": m["search_s"], "prune_s": rep["timing"]["prune_s"],
            "process_wall_s": rep.get("process_wall_s"), "evaluations": m["evaluations"], "shape": m["shape"],
            "history": [h["best"] for h in m["history"]], "final_fitness": m["final_fitness"],
            "peak_rss_gb": rep["timing"].get("peak_rss_gb")}


def cost_table(rows: dict) -> str:
    lines = ["| executor | search s | prune s (library reused) | evaluations | final fitness | shape and history |",
             "|---|---|---|---|---|---|"]
    ref = rows.get("cost-in-process")
    for tag in COST_RUNS:
        r = rows.get(tag)
        if r is None:
            continue
        same = "(reference)" if tag == "cost-in-process" else (
            "identical" if ref and (r["shape"], r["history"], r["final_fitness"]) ==
            (ref["shape"], ref["history"], ref["final_fitness"]) else "**differ**")
        lines.append(f"| {r['executor']} | {r['search_s']:.1f} | {r['prune_s']:.1f} | {r['evaluations']} | "
                     f"{r['final_fitness']:.6f} | {same} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| model | method | kept block linears | params | wt2 ppl | KL (C4 val) | zero-shot avg (limit 50) "
             "| without BoolQ | prune (or recovery) s | layout |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cell = lambda x: "-" if x is None else f"{x:.4f}"
    for r in rows:
        kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"
        lines.append(f"| {r['tag']} | {r['method']} | {r['kept_block_fraction']:.3f} | {r['params'] / 1e6:.2f}M | "
                     f"{r['ppl']:.2f} | {kl} | {cell(r.get('zero_shot'))} | {cell(r.get('zero_shot_no_boolq'))} | "
                     f"{r['prune_s']:.0f} | {r['layout']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--work", default=str(runner.HERE / "runs" / "shape"))
    ap.add_argument("--runs", default="", help="comma-separated: dense, " + ", ".join([*RUNS, *COST_RUNS]) +
                    f"; TAG+MODE ({', '.join(RECOVERIES)}) recovers run TAG as distill_bench.py's MODE at 20 steps")
    ap.add_argument("--zero-shot", type=int, default=0, metavar="LIMIT",
                    help="also the seven zero-shot tasks on the first LIMIT examples each (0: not)")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for tag in (t for t in args.runs.split(",") if t):
            t0 = time.perf_counter()
            run_one(work, tag, args)
            print(f"{tag}: {time.perf_counter() - t0:.0f} s", flush=True)
    found = {tag: r for tag in tags(work) if (r := row(work, tag))}
    found.update({tag: r for tag in COST_RUNS if (r := cost_row(work, tag))})
    rows = runner.merge_results("shape_bench", found)
    print(table(ordered(rows)))
    print(cost_table(rows))


def tags(work: Path) -> list[str]:
    return ["dense", *RUNS, *(recovered(t, m) for t in RUNS for m in RECOVERIES if (work / recovered(t, m)).is_dir())]


def ordered(rows: dict) -> list[dict]:
    """dense, the pruned runs, then the recovered ones."""
    keys = ["dense", *RUNS, *(recovered(t, m) for t in RUNS for m in RECOVERIES)]
    return [rows[t] for t in keys if t in rows]


if __name__ == "__main__":
    main()
