"""Issue-2 benchmark: SmolLM2-135M dense, magnitude and Wanda at 50%, 2:4 and 4:8.

Each configuration runs as its own `prunekit` process, so its wall time and peak RSS are its own.
Writes benchmarks/results/<name>.json (all reports) and prints a Markdown table.

    python benchmarks/sparsity_baselines.py --nsamples 32 --seqlen 2048 --eval-windows 16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = [("magnitude", "--sparsity", "0.5"), ("magnitude", "--pattern", "2:4"), ("magnitude", "--pattern", "4:8"),
           ("wanda", "--sparsity", "0.5"), ("wanda", "--pattern", "2:4"), ("wanda", "--pattern", "4:8")]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--work", default=str(HERE / "runs"), help="where checkpoints go (not committed)")
    ap.add_argument("--name", default="sparsity_baselines")
    ap.add_argument("--only", default=None, help="comma-separated indices of CONFIGS to run")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "prunekit"]
    work = Path(args.work)
    common = ["--model", args.model, "--eval", "wikitext2", "--eval-seqlen", "2048",
              "--eval-windows", str(args.eval_windows), "--overwrite"]
    reports = {}
    dense_dir = work / "dense"
    run(exe + ["eval", *common, "--output", str(dense_dir)])
    reports["dense"] = json.loads((dense_dir / "prunekit_report.json").read_text())
    picked = CONFIGS if not args.only else [CONFIGS[int(i)] for i in args.only.split(",")]
    for method, flag, value in picked:
        tag = f"{method}-{value.replace(':', 'of')}"
        out = work / tag
        t0 = time.perf_counter()
        run(exe + ["prune", *common, "--method", method, flag, value, "--calib", args.calib,
                   "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0", "--output", str(out)])
        rep = json.loads((out / "prunekit_report.json").read_text())
        rep["process_wall_s"] = time.perf_counter() - t0
        reports[tag] = rep
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(reports, indent=2))
    print(table(reports))


def table(reports: dict) -> str:
    rows = ["| run | pattern | sparsity (measured) | WikiText-2 PPL | protocol | prune s | peak RSS GB |",
            "|---|---|---|---|---|---|---|"]
    for tag, r in reports.items():
        ev = r["eval"]["wikitext2"]
        if r.get("method"):
            cfg = r["method"]["config"]
            pat = cfg["pattern"] or "unstructured"
            rows.append(f"| {r['method']['name']} | {pat} | {r['sparsity']['overall']:.4f} | {ev['ppl']:.2f} | "
                        f"{ev['protocol']} | {r['timing']['prune_s']:.1f} | {r['timing']['peak_rss_gb']:.2f} |")
        else:
            rows.append(f"| dense | - | {r['sparsity']['overall']:.4f} | {ev['ppl']:.2f} | {ev['protocol']} | - | "
                        f"{r['timing']['peak_rss_gb']:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
