"""EvoPress's compression database for sparsity: every block pruned at every level by a base
method (SparseGPT or Wanda), built once and kept on disk as safetensors, then assembled into
candidates by loading each block's level.

Statistics come from one pass over the model, block by block, on one of two kinds of inputs:
- `uniform` (the default): each block sees the outputs of the blocks before it pruned at the
  target level, as sequential pruning gives them, so that the all-target candidate is exactly the
  uniformly pruned model and each block's entries compensate the error of a typical prefix;
- `dense`: each block sees the dense model's inputs, so an entry is independent of every other
  block's level; errors then add up across blocks instead of being corrected.
Each level is produced by the base method's own pruning code on a copy of the block, so an entry
equals that block pruned directly by the method on the same inputs.
One file per block holds all levels (`block_0007.safetensors`, keys `LEVEL.linear.name`), in the
model's dtype. The folder name is a hash of the model's weights and config, the base method and
its options, the levels and the calibration tokens, so a database is reused only when all agree.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from ...engine import BlockVisitor, LayerwiseEngine
from ...errors import PrunekitError
from ...models.adapter import ModelAdapter
from ...models.loading import cache_dir
from ..registry import method_named

BASE_METHODS = ("sparsegpt", "wanda")
DATABASE_INPUTS = ("uniform", "dense")


@dataclass(frozen=True)
class Level:
    sparsity: float
    pattern: str | None = None      # N:M (kept of M) when the level is a pattern

    def label(self) -> str:
        return self.pattern or f"{self.sparsity:.4f}"


def base_pruner(base: str, level: Level, adapter: ModelAdapter, options: dict | None = None):
    """The base method's layer-wise pruner at one level, found through the registry; `options` are
    the base's own (SparseGPT's damping and block size; Wanda takes none)."""
    if base not in BASE_METHODS:
        raise PrunekitError(f"unknown base method '{base}': choose {' or '.join(BASE_METHODS)}")
    cls = method_named(base)
    return cls(cls.config_class(sparsity=level.sparsity, pattern=level.pattern, **(options or {})), adapter)


def model_digest(adapter: ModelAdapter, ids: torch.Tensor):
    """A sha256 of the model's config and block weights and of the calibration tokens, for the
    caller to add its own key to."""
    h = hashlib.sha256()
    h.update(adapter.model.config.to_json_string(use_diff=False).encode())
    for _, lin in adapter.all_linears():
        h.update(lin.weight.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(ids.cpu().contiguous().numpy().tobytes())
    return h


def build_once(root: Path, build) -> bool:
    """Make the folder `root` unless it is complete: `build(tmp)` fills a temporary sibling and
    returns the meta.json contents; the folder appears complete or not at all. True if built now.
    Runs that need the same folder at once (two budgets side by side) build it once: a file lock
    beside it makes the others wait, then reuse it."""
    if (root / "meta.json").is_file():
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.with_name(root.name + ".lock"))):
        if (root / "meta.json").is_file():
            return False
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        meta = build(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, root)
        return True


def fingerprint(adapter: ModelAdapter, ids: torch.Tensor, base: str, levels: list[Level], options: dict,
                inputs: str = "dense", target: int | None = None) -> str:
    h = model_digest(adapter, ids)
    key = [base, [(lv.sparsity, lv.pattern) for lv in levels], sorted(options.items())]
    if inputs != "dense":           # dense databases keep the names they were built under
        key += [inputs, target]
    h.update(json.dumps(key).encode())
    return h.hexdigest()[:20]


class _Builder(BlockVisitor):
    """Collects the base method's statistics on the block, prunes a copy per level and writes the
    block's file. With `carry` (a level index) the block itself then takes that level, so the next
    block's inputs are the pruned prefix's outputs; without, it stays dense."""

    def __init__(self, adapter, base, levels, options, root: Path, carry: int | None = None):
        self.adapter, self.levels, self.root, self.carry = adapter, levels, root, carry
        self.modifies = carry is not None
        self._pending = None        # (block index, its dense weights) while a carried block is pruned
        self.pruners = [base_pruner(base, lv, adapter, options) for lv in levels]
        self.events: list[str] = []

    def observe(self, index, block):
        return self.pruners[0].observe(index, block)

    def edit(self, index, block):
        stats = dict(vars(self.pruners[0]))      # the statistics observe() collected
        tensors = {}
        for k, pruner in enumerate(self.pruners):
            # a copy each: pruners consume their statistics (SparseGPT solves in its Hessians)
            vars(pruner).update({n: v if n == "adapter" else copy.deepcopy(v)
                                 for n, v in stats.items() if n not in ("config", "events")})
            work = copy.deepcopy(block)
            pruner.edit(index, work)
            for name, lin in self.adapter.block_linears(work).items():
                tensors[f"{k}.{name}"] = lin.weight.detach().cpu().contiguous()
            self.events += pruner.events
            pruner.events = []
        save_file(tensors, str(self.root / f"block_{index:04d}.safetensors"))
        if self.carry is not None:      # only while the block's outputs are computed: see restore()
            linears = self.adapter.block_linears(block)
            self._pending = (index, {n: lin.weight.detach().to("cpu", copy=True) for n, lin in linears.items()})
            for name, lin in linears.items():
                lin.weight.copy_(tensors[f"{self.carry}.{name}"].to(lin.weight.device))

    @torch.no_grad()
    def restore(self, *_) -> None:
        """The engine's release_block (and the cleanup after a failed build): the carried block has
        passed on its pruned outputs and gets its dense weights back, so building leaves the model
        as it was, holding one block's copy at a time."""
        if self._pending is not None:
            index, dense = self._pending
            for name, lin in self.adapter.block_linears(self.adapter.layers[index]).items():
                lin.weight.copy_(dense[name].to(lin.weight.device))
            self._pending = None


class SparsityDatabase:
    def __init__(self, root: Path):
        self.root = Path(root)
        meta = json.loads((self.root / "meta.json").read_text())
        self.levels = [Level(s, p) for s, p in meta["levels"]]
        self.base, self.blocks = meta["base"], meta["blocks"]
        self.linear_names = meta["linears"]

    @classmethod
    def open_or_build(cls, adapter: ModelAdapter, ids: torch.Tensor, base: str, levels: list[Level],
                      options: dict | None = None, folder: str | os.PathLike | None = None,
                      device: str = "cpu", progress: bool = True, inputs: str = "dense",
                      target: int | None = None) -> tuple["SparsityDatabase", bool]:
        """The database for these inputs, built if absent. Returns (database, built_now).
        `inputs` "uniform" prunes each block on the outputs of the blocks before it at level
        index `target`; "dense" on the dense model's. The model's weights are left unchanged."""
        options = options or {}
        if base not in BASE_METHODS:
            raise PrunekitError(f"unknown base method '{base}': choose {' or '.join(BASE_METHODS)}")
        if inputs not in DATABASE_INPUTS or (inputs == "uniform" and target is None):
            raise PrunekitError(f"database inputs '{inputs}': choose {' or '.join(DATABASE_INPUTS)} "
                                "(uniform needs the target level)")
        parent = Path(folder) if folder else cache_dir() / "evo-db"
        root = parent / f"{base}-{fingerprint(adapter, ids, base, levels, options, inputs, target)}"

        def build(tmp: Path) -> dict:
            carry = target if inputs == "uniform" else None
            builder = _Builder(adapter, base, levels, options, tmp, carry)
            try:
                LayerwiseEngine(adapter, device, progress=progress).run(ids, builder, desc=f"evo database ({base})",
                                                                        release_block=builder.restore)
            finally:
                builder.restore()
            return {"base": base, "levels": [(lv.sparsity, lv.pattern) for lv in levels], "blocks": adapter.num_layers,
                    "linears": list(adapter.linear_names()), "options": options, "inputs": inputs,
                    "calibration": list(ids.shape), "events": builder.events}
        built = build_once(root, build)
        return cls(root), built

    def path(self, block: int) -> Path:
        return self.root / f"block_{block:04d}.safetensors"

    @torch.no_grad()
    def load_into(self, block_index: int, level: int, block) -> None:
        """Write level `level`'s weights of block `block_index` into `block`'s linears."""
        from ...models.adapter import get_path
        with safe_open(str(self.path(block_index)), framework="pt") as f:
            for name in self.linear_names:
                lin = get_path(block, name)
                lin.weight.copy_(f.get_tensor(f"{level}.{name}").to(lin.weight.device))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())


class DatabaseLoader:
    """Picklable `load(block_index, level, block)` for evaluators in other processes."""

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)
        self._db = None

    def __call__(self, block_index: int, level: int, block) -> None:
        if self._db is None:
            self._db = SparsityDatabase(self.root)
        self._db.load_into(block_index, level, block)

    def __getstate__(self):
        return {"root": self.root, "_db": None}
