"""Benchmark: SmolLM2-135M dense, magnitude and Wanda at 50%, 2:4 and 4:8.

    python benchmarks/sparsity_baselines.py --nsamples 32 --seqlen 2048 --eval-windows 16

Writes benchmarks/results/sparsity_baselines.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import runner

CONFIGS = [("magnitude", "--sparsity", "0.5"), ("magnitude", "--pattern", "2:4"), ("magnitude", "--pattern", "4:8"),
           ("wanda", "--sparsity", "0.5"), ("wanda", "--pattern", "2:4"), ("wanda", "--pattern", "4:8")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=32, seqlen=2048, eval_windows=16)
    args = ap.parse_args()
    work = Path(args.work)
    reports = {"dense": runner.dense(work, args.model, args.eval_windows)}
    for method, flag, value in CONFIGS:
        tag = f"{method}-{value.replace(':', 'of')}"
        reports[tag] = runner.prune(work, tag, args.model, args.eval_windows,
                                    ["--method", method, flag, value, "--calib", args.calib, "--nsamples",
                                     str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"],
                                    reuse=args.reuse)
    runner.save_results("sparsity_baselines", reports)
    print(table(reports))


def table(reports: dict) -> str:
    rows = ["| run | pattern | sparsity (measured) | WikiText-2 PPL | protocol | prune s | peak RSS GB |",
            "|---|---|---|---|---|---|---|"]
    for r in reports.values():
        ev = r["eval"]["wikitext2"]
        if r.get("method"):
            cfg = r["method"]["config"]
            rows.append(f"| {r['method']['name']} | {cfg['pattern'] or 'unstructured'} | {r['sparsity']['overall']:.4f} | "
                        f"{ev['ppl']:.2f} | {ev['protocol']} | {r['timing']['prune_s']:.1f} | {r['timing']['peak_rss_gb']:.2f} |")
        else:
            rows.append(f"| dense | - | {r['sparsity']['overall']:.4f} | {ev['ppl']:.2f} | {ev['protocol']} | - | "
                        f"{r['timing']['peak_rss_gb']:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
