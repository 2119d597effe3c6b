"""Benchmark: SparseLLM against SparseGPT and Wanda at high sparsity on SmolLM2-135M.

Targets 70%, 80%, 90% unstructured and 1:4 (the SparseLLM paper's "3:4": 3 of every 4 pruned),
each over all 30 blocks and over the first half (blocks 0-14, the paper's tables' protocol).

    python benchmarks/sparsellm_vs_baselines.py --nsamples 16 --seqlen 1024 --eval-windows 8 --reuse

Writes benchmarks/results/sparsellm_vs_baselines.json, prints a Markdown table, and copies the
SparseLLM convergence plots to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import runner

TARGETS = [("--sparsity", "0.7"), ("--sparsity", "0.8"), ("--sparsity", "0.9"), ("--pattern", "1:4")]
METHODS = ["wanda", "sparsegpt", "sparsellm"]
LAYERS = ["all", "first-half"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=16, seqlen=1024, eval_windows=8)
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--extra", default="", help="extra flags for sparsellm runs, e.g. '--iterations 8'")
    ap.add_argument("--name", default="sparsellm_vs_baselines")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--targets", default=None, help="comma-separated indices into TARGETS")
    args = ap.parse_args()
    runner.DEVICE[:] = ["--device", args.device]
    targets = TARGETS if not args.targets else [TARGETS[int(i)] for i in args.targets.split(",")]
    work = Path(args.work)
    reports = {"dense": runner.dense(work, args.model, args.eval_windows)}
    common = ["--calib", args.calib, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
    for layers in args.layers.split(","):
        for flag, value in targets:
            for method in args.methods.split(","):
                tag = f"{args.name}-{method}-{value.replace(':', 'of')}-{layers}"
                extra = args.extra.split() if method == "sparsellm" else []
                reports[tag] = runner.prune(work, tag, args.model, args.eval_windows,
                                            ["--method", method, flag, value, "--layers", layers, *common, *extra],
                                            reuse=args.reuse)
                runner.save_results(args.name, reports)          # after every run: a cut-off run keeps the rest
                png = work / tag / "sparsellm_convergence.png"
                if png.exists():
                    (runner.HERE / "results").mkdir(exist_ok=True)
                    shutil.copy(png, runner.HERE / "results" / f"{tag}-convergence.png")
    runner.save_results(args.name, reports)
    print(table(reports))


def table(reports: dict) -> str:
    cells = {}
    for r in reports.values():
        if not r.get("method"):
            continue
        cfg = r["method"]["config"]
        target = cfg["pattern"] or f"{cfg['sparsity']:.0%}"
        hist = r["method"].get("ffn_relative_error")
        note = ""
        if hist:
            first = sum(v[0] for v in hist.values()) / len(hist)
            last = sum(v[-1] for v in hist.values()) / len(hist)
            note = f" (FFN err {first:.3f}→{last:.3f})"
        cells[(target, cfg["layers"], r["method"]["name"])] = (
            f"{r['eval']['wikitext2']['ppl']:.2f}{note}", r["eval"]["wikitext2"]["protocol"], r["timing"]["prune_s"])
    d = next(r for r in reports.values() if not r.get("method"))
    lines = [f"Dense: {d['eval']['wikitext2']['ppl']:.2f} [{d['eval']['wikitext2']['protocol']}]", "",
             "| target | blocks | Wanda | SparseGPT | SparseLLM | protocol |", "|---|---|---|---|---|---|"]
    for (target, layers) in dict.fromkeys((k[0], k[1]) for k in cells):
        row = [cells.get((target, layers, m), ("-", "", 0)) for m in ("wanda", "sparsegpt", "sparsellm")]
        proto = next((c[1] for c in row if c[1]), "")
        lines.append(f"| {target} | {layers} | " + " | ".join(c[0] for c in row) + f" | {proto} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
