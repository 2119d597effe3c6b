"""Read pruned checkpoints back lazily, one tensor at a time (safetensors `safe_open`), never whole.

    python benchmarks/stream_outputs.py inspect OUT [--pattern 2:4]   # per-tensor sparsity, N:M validity
    python benchmarks/stream_outputs.py compare A B                   # every tensor byte-equal?

Both print one JSON line. `inspect` reports, for every 2-D weight inside the blocks, the fraction of
zeros (min, max over tensors, and the overall fraction) and, with --pattern N:M, how many tensors
have at most N non-zeros in every group of M consecutive inputs of every row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def tensors(folder: Path):
    for shard in shards(folder):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def block_weight(key: str, t: torch.Tensor) -> bool:
    return ".layers." in key and key.endswith(".weight") and t.dim() == 2


def nm_valid(t: torch.Tensor, n: int, m: int) -> bool:
    if t.shape[1] % m:
        return False
    return bool(((t != 0).view(t.shape[0], -1, m).sum(-1) <= n).all())


def inspect(folder: Path, pattern: str | None) -> dict:
    n_m = tuple(int(x) for x in pattern.split(":")) if pattern else None
    fractions, zeros, total, valid, blocks = [], 0, 0, 0, set()
    for key, t in tensors(folder):
        if not block_weight(key, t):
            continue
        blocks.add(key.split(".layers.")[1].split(".")[0])
        z = int((t == 0).sum())
        fractions.append(z / t.numel())
        zeros, total = zeros + z, total + t.numel()
        valid += bool(n_m and nm_valid(t, *n_m))
    out = {"folder": str(folder), "blocks": len(blocks), "pruned_tensors": len(fractions),
           "overall_zero_fraction": zeros / max(total, 1),
           "min_zero_fraction": min(fractions, default=0.0), "max_zero_fraction": max(fractions, default=0.0),
           "bytes_on_disk": sum(p.stat().st_size for p in shards(folder))}
    if n_m:
        out.update(pattern=pattern, nm_valid_tensors=valid)
    return out


def compare(a: Path, b: Path) -> dict:
    other = {}
    for shard in shards(b):
        with safe_open(str(shard), framework="pt") as f:
            other.update({k: shard for k in f.keys()})
    equal, differ, dtypes = 0, [], set()
    for key, t in tensors(a):
        if key not in other:
            differ.append(key)
            continue
        with safe_open(str(other.pop(key)), framework="pt") as f:
            u = f.get_tensor(key)
        dtypes.add(str(t.dtype))
        same = t.dtype == u.dtype and t.shape == u.shape and torch.equal(t.view(torch.uint8), u.view(torch.uint8))
        equal += same
        if not same:
            differ.append(key)
    return {"a": str(a), "b": str(b), "byte_equal_tensors": equal, "different": differ[:10],
            "only_in_b": sorted(other)[:10], "identical": not differ and not other, "dtypes": sorted(dtypes)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inspect")
    i.add_argument("folder", type=Path)
    i.add_argument("--pattern", default=None)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    result = inspect(args.folder, args.pattern) if args.cmd == "inspect" else compare(args.a, args.b)
    print(json.dumps(result))
    return 0 if args.cmd == "inspect" or result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
