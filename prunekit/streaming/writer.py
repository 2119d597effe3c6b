"""Write a checkpoint as it is produced: each finished unit (a block, then the non-block tensors)
is saved at once as a part file, so it survives a kill; consecutive parts are merged into output
shards of at most `max_shard_bytes` (a unit larger than that gets a shard of its own). `finish`
names the shards model-0000k-of-0000N.safetensors and writes model.safetensors.index.json.

Files are written in the safetensors layout one tensor at a time (safetensors' save_file first
copies every tensor into a bytes object, doubling a block in memory), and shards are merged by
copying the parts' data regions, so writing needs no more memory than the largest tensor.
The writer's whole state is a small dict (`state()`), kept in the run state for resume.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import INDEX, SINGLE

METADATA = {"format": "pt"}   # what save_pretrained writes; from_pretrained checks it
CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
         torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


@dataclass
class Lazy:
    """A tensor read only when its bytes are written (its shape and dtype known before)."""
    shape: tuple
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]


def _nbytes_of(t) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n * t.dtype.itemsize


def _nbytes(tensors: dict) -> int:
    return sum(_nbytes_of(t) for t in tensors.values())


def _header_bytes(entries: dict) -> bytes:
    raw = json.dumps({"__metadata__": METADATA, **entries}, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw) + (-len(raw) % 8)) + raw + b" " * (-len(raw) % 8)


def _save_atomic(tensors: dict, path: Path) -> None:
    """Header from the shapes, then each tensor's bytes in order (a Lazy one is read just then)."""
    entries, offset = {}, 0
    for k, t in tensors.items():
        n = _nbytes_of(t)
        entries[k] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_header_bytes(entries))
        for k, t in tensors.items():
            t = t.load() if isinstance(t, Lazy) else t
            if t.numel():
                f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    os.replace(tmp, path)


def read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def _merge(parts: list[Path], path: Path) -> None:
    """One safetensors file holding all tensors of `parts`, by copying their data regions."""
    entries, offset, regions = {}, 0, []
    for p in parts:
        header, start = read_header(p)
        size = 0
        for k, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            a, b = e["data_offsets"]
            entries[k] = {**e, "data_offsets": [offset + a, offset + b]}
            size = max(size, b)
        regions.append((p, start, size))
        offset += size
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_header_bytes(entries))
        for p, start, size in regions:
            with open(p, "rb") as src:
                src.seek(start)
                copied = _copy(src, f, size)
                if copied != size:
                    raise OSError(f"part file {p} is truncated")
    os.replace(tmp, path)


def _copy(src, dst, size: int, chunk: int = 1 << 24) -> int:
    done = 0
    while done < size:
        buf = src.read(min(chunk, size - done))
        if not buf:
            break
        dst.write(buf)
        done += len(buf)
    return done


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
            _merge(paths, self.folder / name)
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
