#!/usr/bin/env bash
# The streaming benchmark of BENCHMARKS.md (pruning checkpoints larger than memory): one method on one checkpoint, streamed inside a
# memory limit (a quarter of the checkpoint) and, where it fits, in memory; then both outputs read back
# lazily and compared. One torch thread, pinned to one core.
#   benchmarks/streaming_runs.sh CHECKPOINT NAME [--in-memory] -- METHOD OPTIONS...
# e.g. benchmarks/streaming_runs.sh /tmp/rand-1b sparsegpt24 --in-memory -- --method sparsegpt --pattern 2:4
set -euo pipefail
ckpt=$1; name=$2; shift 2
memory=0
if [ "$1" = "--in-memory" ]; then memory=1; shift; fi
[ "$1" = "--" ] && shift
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
res=$here/benchmarks/results/streaming
work=${WORK:-/tmp}
export PRUNEKIT_DATA_DIR=${PRUNEKIT_DATA_DIR:-$(cd "$here/.." && pwd)/shared/data}
calib=(--calib c4 --nsamples ${NSAMPLES:-8} --seqlen ${SEQLEN:-128})
# stream_memory_limit.py takes --method/--sparsity/--pattern/--remove-layers
taskset -c 0 "$py" "$here/benchmarks/stream_memory_limit.py" --model "$ckpt" --out "$work/$name-stream" \
    --limit-fraction 0.25 "${calib[@]}" "$@" | tee "$res/$name-limit-quarter.json"
pattern=$(printf '%s\n' "$@" | grep -A1 -- '--pattern' | tail -1 || true)
[ "$pattern" = "--pattern" ] && pattern=""
"$py" "$here/benchmarks/stream_outputs.py" inspect "$work/$name-stream" ${pattern:+--pattern $pattern} \
    | tee "$res/$name-stream-readback.json"
if [ $memory = 1 ]; then
  OMP_NUM_THREADS=1 /usr/bin/time -v -o "$work/$name-time.txt" taskset -c 0 "$here/.venv/bin/prunekit" prune \
      --model "$ckpt" "$@" "${calib[@]}" --eval none --output "$work/$name-mem" --overwrite \
      > "$work/$name-mem.log" 2>&1 || { tail -5 "$work/$name-mem.log"; exit 1; }
  "$py" - "$work/$name-time.txt" "$res/$name-in-memory.json" <<'PY'
import json, re, sys
t = open(sys.argv[1]).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", t).group(1)
parts = [float(x) for x in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
json.dump({"maxrss_bytes": rss, "wall_seconds_with_startup": round(secs, 1)}, open(sys.argv[2], "w"))
print(json.dumps({"maxrss_bytes": rss, "wall_seconds_with_startup": round(secs, 1)}))
PY
  "$py" "$here/benchmarks/stream_outputs.py" compare "$work/$name-stream" "$work/$name-mem" \
      | tee "$res/$name-stream-vs-memory.json" || true
fi
