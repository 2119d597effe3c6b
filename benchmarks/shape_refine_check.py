"""Benchmark: do evo-shape's variants gain from local distillation on text nothing was fitted on?

    python benchmarks/shape_refine_check.py --blocks 5,10,15,20,25

For each chosen block of SmolLM2-135M, every library variant (KV heads merged 3 -> 1; MLP widths
512, 768, 1280) is built in closed form on 32 C4-train windows of 512 tokens (shape_bench's
library), then trained as `--refine-steps 32 --refine-lr 3e-3` trains it (the first 8 of those
windows, kept where its error on them fell, no held-out check). Both are scored by the normalised output
error against the dense block on 8 C4-validation windows of 512 tokens, which neither the closed
form nor the training saw (the block inputs are the dense model's). Writes
results/shape_refine_check.json.
"""
from __future__ import annotations

import argparse
import time

import torch

import runner
from prunekit.data.calibration import build_calibration
from prunekit.engine import LayerwiseEngine
from prunekit.methods.evo.library import ShapeLibrary, variant_of, write_variant
from prunekit.methods.evo.refine import RefineSettings, refine_block
from prunekit.models.adapter import ModelAdapter
from prunekit.models.loading import load_model
from prunekit.solvers.distill import normalised_error


def block_inputs(adapter, ids, blocks):
    """{block: (inputs [n, L, d], kwargs)} of the dense model at each block in `blocks`."""
    engine = LayerwiseEngine(adapter, "cpu", progress=False)
    inputs, out = engine.capture(ids), {}
    for i in range(max(blocks) + 1):
        if i in blocks:
            out[i] = (inputs.hidden.clone(), inputs.kwargs[i])
        inputs.hidden = engine.forward_block(adapter.layers[i], inputs, index=i)
    return out


def error(adapter, block, dense, tensors, level, x, kwargs, y, kv_heads, width) -> float:
    write_variant(adapter, block, dense, variant_of(tensors, *level, kv_heads, width), kv_heads)
    try:
        with torch.no_grad():
            out = torch.cat([block(x[j:j + 1], **kwargs) for j in range(x.shape[0])])
        return float(normalised_error(out, y))
    finally:
        write_variant(adapter, block, dense, {"kv": kv_heads, "width": width}, kv_heads)


def table(rows: dict) -> str:
    """One row per block, the closed-form and trained error of each variant on the unseen windows."""
    names = ["kv.1", "mlp.512", "mlp.768", "mlp.1280"]
    rows = {k: v for k, v in rows.items() if not k.startswith("_")}      # not the provenance records
    head = " | ".join(f"{n} closed / trained" for n in names)
    lines = [f"| block | {head} |", "|---" * (len(names) + 1) + "|"]
    for b in sorted({r["block"] for r in rows.values()}):
        cells = []
        for n in names:
            r = rows[f"{b}.{n}"]
            cells.append(f"{r['closed_form']:.5f} / {r['trained']:.5f} ({r['trained'] / r['closed_form'] - 1:+.0%})")
        lines.append(f"| {b} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--blocks", default="5,10,15,20,25")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--table", action="store_true", help="print the table of the saved results only")
    args = ap.parse_args()
    if args.table:
        print(table(runner.merge_results("shape_refine_check", {})))
        return
    blocks = [int(b) for b in args.blocks.split(",")]
    model, tok, _ = load_model(args.model)
    model.requires_grad_(False)
    adapter = ModelAdapter(model)
    cal = build_calibration("c4", model, tok, 32, 512, 0).input_ids
    val = build_calibration("c4:validation", model, tok, 8, 512, 0).input_ids
    lib, _ = ShapeLibrary.open_or_build(adapter, cal, [512, 768, 1280], [1], progress=False)
    kv_heads, width = lib.kv_heads, lib.intermediate
    train, unseen = block_inputs(adapter, cal, blocks), block_inputs(adapter, val, blocks)
    settings = RefineSettings(args.steps, 8, args.lr)
    rows = {}
    for b in blocks:
        t0 = time.perf_counter()
        block = adapter.layers[b]
        dense = adapter.linear_copies(block)
        x, kwargs = unseen[b]
        with torch.no_grad():
            y = torch.cat([block(x[j:j + 1], **kwargs) for j in range(x.shape[0])])
        closed = lib.tensors(b, ["kv.", "mlp."])
        trained = dict(closed)
        xt, kt = train[b]
        refine_block(adapter, block, xt[:8], xt[:8], kt, trained, kv_heads, width, settings, "cpu")
        for name, level in {"kv.1": (1, width), "mlp.512": (kv_heads, 512), "mlp.768": (kv_heads, 768),
                            "mlp.1280": (kv_heads, 1280)}.items():
            rows[f"{b}.{name}"] = {"block": b, "variant": name,
                                   "closed_form": error(adapter, block, dense, closed, level, x, kwargs, y, kv_heads, width),
                                   "trained": error(adapter, block, dense, trained, level, x, kwargs, y, kv_heads, width)}
            r = rows[f"{b}.{name}"]
            print(f"block {b:2d} {name:9s} closed form {r['closed_form']:.5f}  trained {r['trained']:.5f}  "
                  f"({r['trained'] / r['closed_form'] - 1:+.1%})", flush=True)
        print(f"block {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(runner.merge_results("shape_refine_check", rows)))


if __name__ == "__main__":
    main()
