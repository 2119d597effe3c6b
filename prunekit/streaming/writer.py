"""Write a checkpoint as it is produced: each finished unit (a block, then the non-block tensors)
is saved at once as a part file, so it survives a kill; consecutive parts are merged into output
shards of at most `max_shard_bytes` (a unit larger than that gets a shard of its own). `finish`
names the shards model-0000k-of-0000N.safetensors and writes model.safetensors.index.json.

The writer's whole state is a small dict (`state()`), kept in the run state for resume.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoint import INDEX, SINGLE

METADATA = {"format": "pt"}   # what save_pretrained writes; from_pretrained checks it


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=METADATA)
    os.replace(tmp, path)


class ShardWriter:
    def __init__(self, folder: Path, max_shard_bytes: int, state: dict | None = None):
        self.folder = Path(folder)
        self.parts = self.folder / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.max = max_shard_bytes
        st = state or {"shards": [], "open": [], "open_bytes": 0, "weight_map": {}, "total_size": 0}
        self.shards: list[str] = st["shards"]          # sealed shard files, in order
        self.open: list[str] = st["open"]              # part files of the shard being filled
        self.open_bytes: int = st["open_bytes"]
        self.weight_map: dict[str, int] = st["weight_map"]   # tensor -> shard number (0-based)
        self.total_size: int = st["total_size"]
        self.garbage: list[Path] = []                  # part files to delete once the state is saved

    def state(self) -> dict:
        return {"shards": list(self.shards), "open": list(self.open), "open_bytes": self.open_bytes,
                "weight_map": dict(self.weight_map), "total_size": self.total_size}

    def add(self, unit: str, tensors: dict[str, torch.Tensor]) -> None:
        """Save one finished unit now; seal the shard being filled first if this unit would overflow it."""
        size = _nbytes(tensors)
        if self.open and self.open_bytes + size > self.max:
            self._seal()
        part = f"{unit}.safetensors"
        _save_atomic(tensors, self.parts / part)
        self.open.append(part)
        self.open_bytes += size
        self.total_size += size
        for k in tensors:
            self.weight_map[k] = len(self.shards)

    def _seal(self) -> None:
        name = f"shard-{len(self.shards):05d}.safetensors"
        paths = [self.parts / p for p in self.open]
        if len(paths) == 1:  # a hard link, not a move: the part must stay until the state stops naming it
            (self.folder / name).unlink(missing_ok=True)
            os.link(paths[0], self.folder / name)
        else:
            merged = {}
            for p in paths:
                with safe_open(str(p), framework="pt") as f:
                    merged.update({k: f.get_tensor(k) for k in f.keys()})
            _save_atomic(merged, self.folder / name)
        self.garbage.extend(paths)
        self.shards.append(name)
        self.open, self.open_bytes = [], 0

    def collect_garbage(self) -> None:
        """Delete merged part files; called after the state that no longer names them is saved."""
        for p in self.garbage:
            p.unlink(missing_ok=True)
        self.garbage = []

    def forget_unlisted(self) -> None:
        """On resume: drop part and shard files written after the last saved state."""
        keep = set(self.open)
        for p in self.parts.iterdir():
            if p.name not in keep:
                p.unlink()
        for p in self.folder.glob("shard-*.safetensors*"):
            if p.name not in self.shards:
                p.unlink()

    def finish(self) -> list[str]:
        """Seal the last shard, give the shards their final names, write the index if sharded."""
        if self.open:
            self._seal()
        self.collect_garbage()
        self.parts.rmdir()
        n = len(self.shards)
        names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for old, new in zip(self.shards, names):
            os.replace(self.folder / old, self.folder / new)
        if n > 1:
            index = {"metadata": {"total_size": self.total_size},
                     "weight_map": {k: names[i] for k, i in sorted(self.weight_map.items())}}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return names
