"""Streamed pruning of a checkpoint inside a memory limit (a cgroup v1 memory group, as root).

Starts one child process per run inside /sys/fs/cgroup/memory/NAME (created, limited, removed
afterwards), prints one JSON line: checkpoint size, limit, the group's peak usage (RSS plus page
cache), the child's peak RSS, wall time and seconds per block.

    python benchmarks/stream_memory_limit.py --model /tmp/rand-1b --method wanda --sparsity 0.5 \
        --limit-fraction 0.25 --calib c4 --nsamples 8 --seqlen 128 --out /tmp/rand-1b-wanda
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup/memory")

CHILD = r"""
import ctypes, gc, json, resource, sys, time
import torch
from transformers import AutoTokenizer
from prunekit.data.calibration import build_calibration
from prunekit.methods import method_named
from prunekit.streaming import stream_prune
a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["model"])
calib = build_calibration(a["calib"], None, tok, a["nsamples"], a["seqlen"], data_dir=a["data_dir"])
del tok                      # 0.12 GB of tokenizer: the run needs only the calibration ids
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
cfg = method_named(a["method"]).config_class(**a["options"])
times = []
last = [time.perf_counter()]
def unit(k):
    now = time.perf_counter(); times.append(now - last[0]); last[0] = now
    if a["times_log"]:       # survives a kill, so a resumed run's blocks can be added up
        with open(a["times_log"], "a") as f:
            f.write(json.dumps({"unit": k, "seconds": times[-1], "wall": time.time()}) + "\n")
start = time.perf_counter()
r = stream_prune(a["model"], cfg, calib, a["out"], on_unit=unit, progress=False, overwrite=not a["resume"],
                 resume=a["resume"],
                 max_shard_bytes=a["shard"])
print(json.dumps({"seconds": time.perf_counter() - start, "unit_seconds": times, "sparsity": r.sparsity["overall"],
                  "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", type=float, default=None)
    ap.add_argument("--pattern", default=None)
    ap.add_argument("--remove-layers", type=int, default=None)
    ap.add_argument("--limit-fraction", type=float, default=0.25, help="memory limit as a fraction of the checkpoint size")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--data-dir", default=os.environ.get("PRUNEKIT_DATA_DIR"))
    ap.add_argument("--shard-bytes", type=int, default=300_000_000)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run into --out")
    ap.add_argument("--times-log", default=None, help="append each block's seconds to this file as it finishes")
    args = ap.parse_args(argv)
    size = sum(p.stat().st_size for p in Path(args.model).glob("*.safetensors"))
    limit = int(size * args.limit_fraction)
    options = {k: v for k, v in (("sparsity", args.sparsity), ("pattern", args.pattern),
                                 ("remove_layers", args.remove_layers)) if v is not None}
    payload = json.dumps({"model": args.model, "out": args.out, "method": args.method, "options": options,
                          "calib": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen,
                          "data_dir": args.data_dir, "shard": args.shard_bytes,
                          "resume": args.resume, "times_log": args.times_log})
    group = CGROUP / f"prunekit-bench-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, env=env,
                               preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        wall = time.perf_counter() - start
        peak = int((group / "memory.max_usage_in_bytes").read_text())
        failcnt = int((group / "memory.failcnt").read_text())
    finally:
        group.rmdir()
    result = {"model": args.model, "bytes_on_disk": size, "limit_bytes": limit, "method": args.method,
              "options": options, "calibration_tokens": args.nsamples * args.seqlen,
              "calibration": f"{args.calib} {args.nsamples}x{args.seqlen}", "returncode": child.returncode,
              "resumed": args.resume,
              "group_peak_bytes": peak, "group_limit_hits": failcnt, "wall_seconds_with_startup": round(wall, 1)}
    if child.returncode == 0:
        run = json.loads(child.stdout.strip().splitlines()[-1])
        blocks = run["unit_seconds"][:-1]     # the last unit writes the non-block tensors
        later = sorted(blocks[1:]) or blocks   # the first also pays for reading the embeddings and calibrating
        result.update(prune_seconds=round(run["seconds"], 1), child_maxrss_bytes=run["maxrss_bytes"],
                      first_block_seconds=round(blocks[0], 2),
                      median_seconds_per_later_block=round(later[len(later) // 2], 2), blocks=len(blocks),
                      sparsity=run["sparsity"])
    else:
        result["stderr_tail"] = child.stderr[-600:]
    print(json.dumps(result))
    return 0 if child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
