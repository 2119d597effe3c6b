"""Benchmark: recovery by distillation against LoRA on the lm loss, at equal token budgets.

Every pruned SmolLM2-135M model is recovered four ways on the same C4-train windows
(`prunekit recover --data c4 --batch-size 2 --grad-accum 2 --seqlen 256 --seed 0`):

- lora-lm:        LoRA (r 8, alpha 16, all seven projections) on the next-token loss, lr 3e-4
- lora-kd:        the same adapters on T^2 KL(teacher || student), T 1, lr 3e-4
- lora-kd-top64:  the same with the teacher's top-64 summaries cached before training
- full-lm:        every decoder-block weight on the next-token loss, lr 1e-4 (separates what
                  full training brings from what the teacher brings)
- full-kd:        every decoder-block weight on the KL, lr 1e-4
- local-full-kd:  --local first (every changed block trained 32 steps on 16 windows to reproduce
                  the dense span it stands for), then full-kd

at two budgets: 20 optimiser steps (20 480 tokens, the recovery section's budget) and 80 steps
(81 920 tokens). The teacher is the dense model each pruned folder's lineage names. After each
run: WikiText-2 perplexity (wt2-2048/16, in the recover run), KL(dense || model) on 8 held-out
C4-validation windows of 512 tokens, and with --zero-shot the seven tasks at --limit examples.

    python benchmarks/distill_bench.py --runs shortgpt-6:lora-kd:20,wanda-2of4:full-kd:80
    python benchmarks/distill_bench.py --table

Runs are independent (a run prunes its model if missing), so two processes pinned to one core
each can take disjoint --runs. Writes results/distill_bench.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import runner

DEPTH_CAL = ["--calib", "c4", "--nsamples", "10", "--seqlen", "128", "--seed", "0"]
WIDTH_CAL = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", "0", "--generations", "4",
             "--width-multiple", "256"]
SPARSE_CAL = ["--calib", "c4", "--nsamples", "32", "--seqlen", "2048", "--seed", "0"]
MODELS = {
    "shortgpt-6": ["--method", "shortgpt", "--remove-layers", "6", *DEPTH_CAL],
    "shortgpt-10": ["--method", "shortgpt", "--remove-layers", "10", *DEPTH_CAL],
    "slm-6": ["--method", "slm", "--merge", "rdsc", "--remove-layers", "6", *DEPTH_CAL],
    "slm-10": ["--method", "slm", "--merge", "rdsc", "--remove-layers", "10", *DEPTH_CAL],
    "sleb-6": ["--method", "sleb", "--remove-layers", "6", *DEPTH_CAL],
    "shortgpt-sublayer-0.8": ["--method", "shortgpt", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "width-mlp-0.8": ["--method", "search-llm", "--attention", "keep", "--keep", "0.8", *WIDTH_CAL],
    "wanda-2of4": ["--method", "wanda", "--pattern", "2:4", *SPARSE_CAL],
}
MODES = {
    "lora-lm": ["--lr", "3e-4"],
    "lora-kd": ["--loss", "kd", "--lr", "3e-4"],
    "lora-kd-top64": ["--loss", "kd", "--kd-topk", "64", "--lr", "3e-4"],
    "full-lm": ["--train", "full", "--lr", "1e-4"],
    "full-kd": ["--loss", "kd", "--train", "full", "--lr", "1e-4"],
    "local-full-kd": ["--loss", "kd", "--train", "full", "--lr", "1e-4", "--local", "first"],
}
KL = ["--eval", "kl", "--kl-data", "c4:validation", "--kl-nsamples", "8", "--kl-seqlen", "512"]


def recovery_flags(steps: int) -> list[str]:
    return ["--data", "c4", "--steps", str(steps), "--batch-size", "2", "--grad-accum", "2", "--seqlen", "256",
            "--warmup-steps", "2", "--seed", "0", "--eval-every", str(max(5, steps // 4)), "--save-every", "1000"]


def kl_of(folder: Path) -> dict:
    rep = json.loads((folder / "prunekit_report.json").read_text())
    kl = (rep.get("eval") or {}).get("kl") or rep.get("kl")
    if kl is None:
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(folder), *KL, "--trust-remote-code", "--save-to-model"])
        rep = json.loads((folder / "prunekit_report.json").read_text())
        kl = (rep.get("eval") or {}).get("kl") or rep.get("kl")
    return kl


def zero_shot(folder: Path, limit: int) -> dict | None:
    rep = json.loads((folder / "prunekit_report.json").read_text())
    if (rep.get("zero_shot") or {}).get("limit") != limit:
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(folder), "--eval", "none", "--tasks", "all",
                                      "--limit", str(limit), "--trust-remote-code", "--save-to-model"])
        rep = json.loads((folder / "prunekit_report.json").read_text())
    return rep.get("zero_shot")


def pruned(work: Path, model: str, args) -> Path:
    extra = ["--trust-remote-code"] if "sublayer" in model or "width" in model else []
    runner.prune(work, f"pruned-{model}", args.model, args.eval_windows, [*MODELS[model], *extra], reuse=True)
    folder = work / f"pruned-{model}"
    kl_of(folder)
    return folder


def run_one(work: Path, spec: str, args) -> None:
    model, mode, steps = spec.split(":")
    source = pruned(work, model, args)
    out = work / f"{model}-{mode}-{steps}"
    if not (out / "prunekit_report.json").exists():
        t0 = time.perf_counter()
        runner.run(runner.PRUNEKIT + ["recover", *runner.eval_args(str(source), args.eval_windows),
                                      "--trust-remote-code", *recovery_flags(int(steps)), *MODES[mode],
                                      "--output", str(out)])
        rep = json.loads((out / "prunekit_report.json").read_text())
        rep["process_wall_s"] = time.perf_counter() - t0
        (out / "prunekit_report.json").write_text(json.dumps(rep, indent=2))
    kl_of(out)
    if args.zero_shot:
        zero_shot(out, args.limit)
        zero_shot(source, args.limit)


def row(work: Path, spec: str) -> dict | None:
    model, mode, steps = spec.split(":")
    out, src = work / f"{model}-{mode}-{steps}", work / f"pruned-{model}"
    if not (out / "prunekit_report.json").exists():
        return None
    rec, before = (json.loads((f / "prunekit_report.json").read_text()) for f in (out, src))
    r = rec["recovery"]
    zs, zs0 = rec.get("zero_shot"), before.get("zero_shot")
    kl, kl0 = ((rep.get("eval") or {}).get("kl") or rep.get("kl") for rep in (rec, before))
    return {"model": model, "mode": mode, "steps": int(steps), "tokens": r["tokens_seen"],
            "params": rec["model"]["params_total"], "dense_params": rec["lineage"][0]["params_before"],
            "ppl_before": before["eval"]["wikitext2"]["ppl"], "ppl_after": rec["eval"]["wikitext2"]["ppl"],
            "protocol": rec["eval"]["wikitext2"]["protocol"],
            "kl_before": (kl0 or {}).get("kl"), "kl_after": (kl or {}).get("kl"),
            "agreement_after": (kl or {}).get("top1_agreement"),
            "zero_shot_before": (zs0 or {}).get("average"), "zero_shot_after": (zs or {}).get("average"),
            "train_s": r["train_s"], "tokens_per_s": r["tokens_this_run"] / max(r["train_s"], 1e-9),
            "teacher_s": r.get("teacher_s"), "teacher_share": r.get("teacher_share"),
            "local": local_summary(r.get("local")),
            "wall_s": r["wall_s"], "peak_gb": r["peak_memory_gb"],
            "sparsity": [r.get("sparsity_before"), rec["sparsity"]["overall"]], "nm_valid": r.get("nm_valid")}


def local_summary(local: dict | None) -> dict | None:
    """Changed blocks, tokens per block, and the mean relative fall of their output error."""
    if not local:
        return None
    blocks = local["blocks"]
    fall = sum(1 - b["error_after"] / b["error_before"] for b in blocks) / max(len(blocks), 1)
    return {"blocks": len(blocks), "tokens_per_block": local["tokens_per_block"], "mean_error_fall": fall,
            "errors": [[b["error_before"], b["error_after"]] for b in blocks]}


def ordered(rows: dict) -> list[dict]:
    """Rows by model, then budget, then mode, as the table shows them."""
    return sorted(rows.values(), key=lambda r: (list(MODELS).index(r["model"]), r["steps"], list(MODES).index(r["mode"])))


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    lines = ["| model (of dense params) | recovery | tokens | wt2 ppl before → after | KL before → after | "
             "top-1 agr. | zero-shot before → after | train s (tok/s) | teacher share | local: block error fall | "
             "peak GB | sparsity / 2:4 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nm = (r.get("nm_valid") or {}).get("2:4", {})
        sp = f"{r['sparsity'][1]:.4f}" + (f", 2:4 {nm.get('after')}" if nm.get("before") else "")
        loc = r.get("local")
        lines.append(
            f"| {r['model']} ({r['params'] / r['dense_params']:.3f}) | {r['mode']} | {r['tokens']} | "
            f"{r['ppl_before']:.2f} → **{r['ppl_after']:.2f}** | {_f(r['kl_before'], '.3f')} → {_f(r['kl_after'], '.3f')} | "
            f"{_f(r['agreement_after'], '.3f')} | {_f(r['zero_shot_before'], '.4f')} → {_f(r['zero_shot_after'], '.4f')} | "
            f"{r['train_s']:.0f} ({r['tokens_per_s']:.0f}) | {_f(r['teacher_share'], '.0%')} | "
            + (f"−{loc['mean_error_fall']:.0%} ({loc['blocks']} blocks)" if loc else "-")
            + f" | {r['peak_gb']:.2f} | {sp} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-windows", type=int, default=16, help="first K windows of wt2-2048")
    ap.add_argument("--work", default=str(runner.HERE / "runs" / "distill"), help="where checkpoints go")
    ap.add_argument("--runs", default="", help="comma-separated MODEL:MODE:STEPS; models: " + ", ".join(MODELS)
                    + "; modes: " + ", ".join(MODES))
    ap.add_argument("--zero-shot", action="store_true", help="also the zero-shot tasks before and after")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--table", action="store_true", help="only print the table of the runs so far")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    specs = [s for s in args.runs.split(",") if s]
    if not args.table:
        for spec in specs:
            run_one(work, spec, args)
    found = {f"{m}:{mode}:{s}": r for m in MODELS for mode in MODES for s in (20, 80)
             if (r := row(work, f"{m}:{mode}:{s}"))}
    print(table(ordered(runner.merge_results("distill_bench", found))))


if __name__ == "__main__":
    main()
