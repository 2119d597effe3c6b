#!/usr/bin/env bash
# Streamed against in-memory on SmolLM2-135M (do both give the same model, byte for byte?): Wanda 50%, SparseGPT 2:4 and ShortGPT
# (6 blocks), each run twice from the converted checkpoint folder (--stream and --no-stream, same
# calibration), then every tensor of the two outputs compared byte for byte.
#   benchmarks/stream_smollm2.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
work=${1:-/tmp/stream-smollm2}
export PRUNEKIT_DATA_DIR=${PRUNEKIT_DATA_DIR:-$(cd "$here/.." && pwd)/shared/data}
mkdir -p "$work"
# the GGUF is converted once to a safetensors folder; streaming reads that folder
src=$("$py" -c "
from prunekit.models.loading import load_model
from prunekit.models.loading import ALIASES, _gguf_cache_path, find_packaged_file
load_model('smollm2-135m')
p, f, _ = ALIASES['smollm2-135m']; print(_gguf_cache_path(str(find_packaged_file(p, f))))" 2>/dev/null | tail -1)
calib=(--calib c4 --nsamples 32 --seqlen 256 --eval none)
run() {   # name, flags...
  local name=$1; shift
  for mode in stream no-stream; do
    "$here/.venv/bin/prunekit" prune --model "$src" "$@" "${calib[@]}" --$mode --output "$work/$name-$mode" \
        --overwrite > "$work/$name-$mode.log" 2>&1
  done
  "$py" "$here/benchmarks/stream_outputs.py" compare "$work/$name-stream" "$work/$name-no-stream" \
      | tee "$here/benchmarks/results/streaming/smollm2-$name-stream-vs-memory.json"
}
run wanda50 --method wanda --sparsity 0.5
run sparsegpt24 --method sparsegpt --pattern 2:4
run shortgpt6 --method shortgpt --remove-layers 6
