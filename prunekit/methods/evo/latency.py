"""evo-shape's per-variant latency table (for --max-latency): every attention and MLP variant of
the library timed on the target device at a stated batch and length, in the model it would ship as.

One DeciLM model is built from the library whose blocks cycle through every variant (no block is
left out), so each variant runs in several blocks at its real shapes with its real code; forward
hooks time each block's attention and MLP sublayer over `reps` forwards after one warm-up, and a
variant's latency is the median of its timings. "none" costs 0. The table is kept in the library
folder under a name that states device, batch, length and CPU threads, and reused.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ...models.adapter import ModelAdapter
from .library import ShapeLibrary

TABLE_FORMAT = "prunekit-latency-table/1"


def table_path(lib: ShapeLibrary, device: str, batch: int, seqlen: int) -> Path:
    return lib.root / f"latency-{torch.device(device).type}-b{batch}-s{seqlen}-t{torch.get_num_threads()}.json"


def covering_genomes(lib: ShapeLibrary, blocks: int) -> list[tuple]:
    """Block i of the k-th model takes attention level 1 + (i + k·blocks) mod (A-1) and MLP level
    1 + (i + k·blocks) mod (M-1): every non-none level runs somewhere; one model unless the model
    has fewer blocks than levels."""
    na, nm = len(lib.attention_levels) - 1, len(lib.mlp_levels) - 1
    return [tuple((1 + (i + o) % na, 1 + (i + o) % nm) for i in range(blocks))
            for o in range(0, max(na, nm), blocks)]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(module, sink: list, device):
    """Hooks that append the module's forward time (seconds) to `sink`; returns the handles."""
    start = {}

    def pre(mod, args, kwargs=None):
        _sync(device)
        start["t"] = time.perf_counter()

    def post(mod, args, out):
        _sync(device)
        sink.append(time.perf_counter() - start["t"])
    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


@torch.no_grad()
def measure(adapter: ModelAdapter, lib: ShapeLibrary, build, device: str, batch: int, seqlen: int,
            reps: int) -> dict:
    """The table: {"attention": [s per level], "mlp": [...], ...}; `build(genome)` gives the
    DeciLM model of a genome (evo-shape's build_model)."""
    t0 = time.perf_counter()
    times = {("attention", a): [] for a in range(1, len(lib.attention_levels))}
    times.update({("mlp", m): [] for m in range(1, len(lib.mlp_levels))})
    for genome in covering_genomes(lib, adapter.num_layers):
        _time_model(build(genome), genome, times, device, batch, seqlen, reps)
    median = lambda part, n: [0.0] + [statistics.median(times[(part, k)]) for k in range(1, n)]
    return {"format": TABLE_FORMAT, "attention": median("attention", len(lib.attention_levels)),
            "mlp": median("mlp", len(lib.mlp_levels)), "kv_levels": lib.attention_levels,
            "mlp_levels": lib.mlp_levels, "device": str(device), "batch": batch, "seqlen": seqlen,
            "threads": torch.get_num_threads(), "reps": reps,
            "timings_per_variant": {f"{p}:{k}": len(v) for (p, k), v in times.items()},
            "measure_s": time.perf_counter() - t0}


def _time_model(model, genome, times: dict, device, batch: int, seqlen: int, reps: int) -> None:
    """Adds each block's sublayer times over `reps` forwards (after one warm-up) to `times`."""
    model = model.to(device).eval()
    model.config.use_cache = False
    seen = {key: [] for key in times}
    handles = []
    for layer, (a, m) in zip(ModelAdapter(model).layers, genome):
        handles += _timed(layer.self_attn, seen[("attention", a)], device)
        handles += _timed(layer.mlp, seen[("mlp", m)], device)
    ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), generator=torch.Generator().manual_seed(0))
    model(ids.to(device))                                 # warm-up, not counted
    for v in seen.values():
        v.clear()
    for _ in range(reps):
        model(ids.to(device))
    for h in handles:
        h.remove()
    for key, v in seen.items():
        times[key] += v


def open_or_measure(adapter: ModelAdapter, lib: ShapeLibrary, build, device: str, batch: int, seqlen: int,
                    reps: int) -> tuple[dict, bool]:
    """The table for this device, batch, length and thread count, measured if absent; (table, measured_now)."""
    path = table_path(lib, device, batch, seqlen)
    if path.is_file():
        return json.loads(path.read_text()), False
    table = measure(adapter, lib, build, device, batch, seqlen, reps)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(path)
    return table, True
