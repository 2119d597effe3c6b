"""Benchmark: the seven zero-shot tasks (lm-eval, 0-shot) for SmolLM2 dense and for
pruned run folders, written into each folder's report (--save-to-model), then one comparison page.

    python benchmarks/zero_shot.py --limit 100 runs/depth-slm-rdsc-6 runs/depth-shortgpt-6 ...

The dense model is evaluated into runs/dense-zero-shot (perplexity and zero-shot). With
--page, `prunekit compare` writes docs/comparison.md over the dense folder and the runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import runner


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run folders written by prunekit prune")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=100, help="first N examples of each task (0 = full sets)")
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--work", default=str(runner.HERE / "runs"))
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--page", default=None, help="write a comparison page here (e.g. docs/comparison.md)")
    args = ap.parse_args()
    limit = ["--limit", str(args.limit)] if args.limit else []
    dense = Path(args.work) / "dense-zero-shot"
    if not (args.reuse and (dense / "prunekit_report.json").exists()):
        runner.run(runner.PRUNEKIT + ["eval", *runner.eval_args(args.model, args.eval_windows), "--tasks", "all",
                                      *limit, "--output", str(dense)])
    for run in args.runs:
        report = json.loads((Path(run) / "prunekit_report.json").read_text())
        zs = report.get("zero_shot")
        if args.reuse and zs and zs.get("limit") == (args.limit or None):
            continue
        runner.run(runner.PRUNEKIT + ["eval", "--model", run, "--eval", "none", "--tasks", "all", *limit,
                                      "--trust-remote-code", "--save-to-model"])
    if args.page:
        runner.run(runner.PRUNEKIT + ["compare", str(dense), *args.runs, "--output", args.page])


if __name__ == "__main__":
    main()
