"""Benchmark: depth pruning of SmolLM2-135M (30 blocks) at 20% and 35% (6 and 10 blocks).

SLM with both merge rules, LaCo, ShortGPT, SLEB and PPL on the same calibration windows, each
evaluated on WikiText-2 and, when pruning is done, measured for speed against the dense model
(each model in its own fresh process, same run). Also the CKA analysis of the dense model.

    python benchmarks/depth_methods.py --reuse                # prune + evaluate + analyze
    python benchmarks/depth_methods.py --reuse --bench-only   # speed, on an otherwise idle machine

Writes benchmarks/results/depth_methods.json (+ depth_bench.json) and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import runner

METHODS = [("slm-rdsc", ["--method", "slm", "--merge", "rdsc"]), ("slm-top", ["--method", "slm", "--merge", "top"]),
           ("laco", ["--method", "laco"]), ("shortgpt", ["--method", "shortgpt"]), ("sleb", ["--method", "sleb"]),
           ("ppl", ["--method", "ppl"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=10, seqlen=128, eval_windows=16)
    ap.add_argument("--remove", default="6,10", help="comma-separated block counts to remove")
    ap.add_argument("--methods", default=",".join(m for m, _ in METHODS))
    ap.add_argument("--bench-only", action="store_true", help="only the speed measurements of existing runs")
    ap.add_argument("--bench-seqlen", type=int, default=512)
    ap.add_argument("--bench-reps", type=int, default=5)
    ap.add_argument("--bench-new-tokens", type=int, default=32)
    args = ap.parse_args()
    work = Path(args.work)
    results = runner.HERE / "results"
    results.mkdir(exist_ok=True)
    chosen = [(m, f) for m, f in METHODS if m in args.methods.split(",")]
    tags = [(f"depth-{m}-{k}", m, int(k), f) for k in args.remove.split(",") for m, f in chosen]
    if not args.bench_only:
        out = work / "depth-analysis"
        if not (args.reuse and (out / "analysis.json").exists()):
            runner.run(runner.PRUNEKIT + ["analyze", "--model", args.model, "--calib", args.calib, "--nsamples", "32",
                                          "--seqlen", "128", "--output", str(out), "--overwrite"])
        for name in ("analysis.json", "cka.png", "layer_scores.png"):
            shutil.copy(out / name, results / f"depth-{name}")
        reports = {"dense": runner.dense(work, args.model, args.eval_windows)}
        common = ["--calib", args.calib, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
        for tag, m, k, flags in tags:
            reports[tag] = runner.prune(work, tag, args.model, args.eval_windows,
                                        [*flags, "--remove-layers", str(k), *common], reuse=args.reuse)
            runner.save_results("depth_methods", reports)
        print(table(reports))
    else:
        bench(work, args, tags)


def bench(work: Path, args, tags):
    runner.bench(work, args.model, [t for t, *_ in tags], "depth_bench", seqlen=args.bench_seqlen, prompt_len=128,
                 new_tokens=args.bench_new_tokens, reps=args.bench_reps, warmup=1)


def table(reports: dict) -> str:
    dense = reports["dense"]["eval"]["wikitext2"]
    lines = [f"dense: {dense['ppl']:.2f} [{dense['protocol']}]", "",
             "| removed | method | layers | params | wt2 ppl | prune s | merged / removed blocks |",
             "|---|---|---|---|---|---|---|"]
    for tag, r in reports.items():
        if tag == "dense":
            continue
        d = r["method"]["depth"]
        merged = [f"{g[0]}-{g[-1]}" for g in d["groups"] if len(g) > 1]
        kept = {i for g in d["groups"] for i in g}
        gone = [str(i) for i in range(d["layers_before"]) if i not in kept]
        what = ("merged " + ", ".join(merged) if merged else "") + (" removed " + ", ".join(gone) if gone else "")
        lines.append(f"| {d['layers_removed']} | {tag.split('-', 1)[1].rsplit('-', 1)[0]} | {d['layers_after']} | "
                     f"{r['model']['params_total'] / 1e6:.1f}M | {r['eval']['wikitext2']['ppl']:.2f} | "
                     f"{r['timing']['prune_s']:.0f} | {what.strip()} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
