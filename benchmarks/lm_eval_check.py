"""Check that `prunekit eval --tasks` gives what lm-eval's own command line gives on the same saved
model and the same (local) task data.

    python benchmarks/lm_eval_check.py runs/depth-shortgpt-6 --tasks piqa,arc_easy,winogrande --limit 50

Runs `prunekit eval` (lm-eval as a library, model in memory), then `lm_eval run --model hf` on the
folder with `--include_path` pointing at the task YAMLs prunekit wrote, and prints both side by side.
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from pathlib import Path

import runner


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tasks", default="piqa,arc_easy,winogrande")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", default=str(runner.HERE / "runs" / "lm-eval-check"))
    args = ap.parse_args()
    work = Path(args.work)
    ours = work / "prunekit"
    runner.run(runner.PRUNEKIT + ["eval", "--model", args.model, "--eval", "none", "--tasks", args.tasks,
                                  "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--output", str(ours),
                                  "--overwrite"])
    zs = json.loads((ours / "prunekit_report.json").read_text())["zero_shot"]
    folder = zs["source"].split("converted in ")[1].rstrip(")")
    names = ",".join("pk_" + t for t in args.tasks.split(","))
    theirs = work / "lm-eval"
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "run", "--model", "hf", "--model_args",
           f"pretrained={args.model},dtype=float32", "--tasks", names, "--include_path", folder,
           "--limit", str(args.limit), "--batch_size", str(args.batch_size), "--num_fewshot", "0",
           "--device", "cpu", "--output_path", str(theirs)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    res = json.loads(Path(sorted(glob.glob(str(theirs / "**" / "results_*.json"), recursive=True))[-1]).read_text())
    rows, same = [], True
    for t in args.tasks.split(","):
        r = res["results"]["pk_" + t]
        for metric in ("acc", "acc_norm"):
            if metric in zs["tasks"][t]:
                a, b = zs["tasks"][t][metric], r[f"{metric},none"]
                same &= a == b
                rows.append({"task": t, "metric": metric, "prunekit": a, "lm_eval_cli": b})
    out = {"model": args.model, "limit": args.limit, "batch_size": args.batch_size, "rows": rows, "identical": same,
           "cli": " ".join(cmd)}
    runner.save_results("lm_eval_check", out)
    for r in rows:
        print(f"{r['task']:<14s}{r['metric']:<9s} prunekit {r['prunekit']:.4f}   lm_eval CLI {r['lm_eval_cli']:.4f}")
    print("identical" if same else "DIFFERENT")


if __name__ == "__main__":
    main()
