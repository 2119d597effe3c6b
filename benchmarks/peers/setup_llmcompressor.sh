#!/usr/bin/env bash
# Installs llm-compressor into its own virtual environment (it pins transformers <= 5.17, older
# than prunekit's), with torch held at 2.13.0 so no CUDA build is pulled.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${LLMC_VENV:-$here/.venv-llmcompressor}"
test -x "$venv/bin/python" || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q torch==2.13.0
echo "torch==2.13.0" > "$venv/constraints.txt"
"$venv/bin/python" -m pip install -q -c "$venv/constraints.txt" "llmcompressor==0.14.0.1"
"$venv/bin/python" -c "import llmcompressor, torch, transformers; print('llmcompressor', llmcompressor.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
