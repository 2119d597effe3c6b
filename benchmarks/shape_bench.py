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

import runner

DEPTH_CAL = ["--calib", "c4", "--nsamples", "10", "--seqlen", "128", "--seed", "0"]
WIDTH_CAL = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", "0"]
SEARCH = ["--generations", "4", "--width-multiple", "256"]
RUNS = {
    "shape-0.8": ["--method", "evo-shape", "--keep", "0.8", *WIDTH_CAL],
    "shape-0.65": ["--method", "evo-shape", "--keep", "0.65", *WIDTH_CAL],
    "shortgpt-6": ["--method", "shortgpt", "--remove-layers", "6", *DEPTH_CAL],                 # 0.8 of the blocks
    "shortgpt-10": ["--method", "shortgpt", "--remove-layers", "10", *DEPTH_CAL],               # 0.667
    "evo-depth-6": ["--method", "evo-depth", "--remove-layers", "6", *DEPTH_CAL],
    "shortgpt-sublayer-0.8": ["--method", "shortgpt", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "sleb-sublayer-0.8": ["--method", "sleb", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "width-mlp-0.8": ["--method", "search-llm", "--attention", "keep", "--keep", "0.8", *WIDTH_CAL, *SEARCH],
    "width-kv-0.8": ["--method", "search-llm", "--attention", "kv-groups", "--keep", "0.8", *WIDTH_CAL, *SEARCH],
    "uniform-mlp-0.8": ["--method", "search-llm", "--attention", "keep", "--keep", "0.8", *WIDTH_CAL,
                        "--generations", "0", "--width-multiple", "256"],
}
KL = ["--eval", "kl", "--kl-data", "c4:validation", "--kl-nsamples", "8", "--kl-seqlen", "512"]


def run_one(work: Path, tag: str, args) -> None:
    out = work / tag
    if not (out / "prunekit_report.json").exists():
        runner.prune(work, tag, args.model, args.eval_windows, [*RUNS[tag], "--trust-remote-code"])
    rep = json.loads((out / "prunekit_report.json").read_text())
    if not ((rep.get("eval") or {}).get("kl") or rep.get("kl")):
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(out), *KL, "--trust-remote-code", "--save-to-model"])


def row(work: Path, tag: str) -> dict | None:
    path = work / tag / "prunekit_report.json"
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    meth = rep["method"]
    kl = (rep.get("eval") or {}).get("kl") or rep.get("kl") or {}
    kept = meth.get("kept_fraction")
    if kept is None and (meth.get("depth") or {}).get("kept_params"):
        kept = meth["depth"]["kept_params"] / meth["depth"]["block_params"]
    if kept is None and meth.get("depth"):
        kept = meth["depth"]["layers_after"] / meth["depth"]["layers_before"]
    out = {"tag": tag, "method": meth["name"], "kept_block_fraction": kept, "params": rep["model"]["params_total"],
           "ppl": rep["eval"]["wikitext2"]["ppl"], "protocol": rep["eval"]["wikitext2"]["protocol"],
           "kl": kl.get("kl"), "prune_s": rep["timing"]["prune_s"], "layout": rep["model"]["serving"]["layout"]}
    if meth["name"] == "evo-shape":
        u = meth["uniform_starts"][meth["uniform_best"]]
        out.update(shape=meth["shape"], library_mb=meth["library"]["bytes"] / 1e6,
                   library_built=meth["library"]["built_now"], uniform=u, start_fitness=meth["initial_fitness"],
                   final_fitness=meth["final_fitness"], evaluations=meth["evaluations"],
                   search_s=meth["search_s"], executor=meth["executor"])
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | method | kept block linears | params | wt2 ppl | KL (C4 val) | prune s | layout |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"
        lines.append(f"| {r['tag']} | {r['method']} | {r['kept_block_fraction']:.3f} | {r['params'] / 1e6:.2f}M | "
                     f"**{r['ppl']:.2f}** | {kl} | {r['prune_s']:.0f} | {r['layout']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--work", default=str(runner.HERE / "runs" / "shape"))
    ap.add_argument("--runs", default="", help="comma-separated: " + ", ".join(RUNS))
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for tag in (t for t in args.runs.split(",") if t):
            t0 = time.perf_counter()
            run_one(work, tag, args)
            print(f"{tag}: {time.perf_counter() - t0:.0f} s", flush=True)
    found = {tag: r for tag in RUNS if (r := row(work, tag))}
    rows = runner.merge_results("shape_bench", found)
    print(table([rows[t] for t in RUNS if t in rows]))


if __name__ == "__main__":
    main()
