"""Reading saved checkpoints back, for byte-equal comparisons."""
from __future__ import annotations

from pathlib import Path

from safetensors import safe_open


def read_folder(path) -> dict:
    """Every tensor of a safetensors checkpoint folder (single file or shards)."""
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out
