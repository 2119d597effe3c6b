"""Benchmark: LoRA recovery of pruned SmolLM2-135M models under one recovery budget.

Three questions, each configuration a chain of `prunekit` processes (prune stages, then
`prunekit recover` with the same budget for every model, then evaluation):

- depth: SLM (rdsc), ShortGPT and SLEB at 6 and 10 of 30 blocks, before and after recovery
  (WikiText-2 perplexity; the zero-shot average at --limit examples per task after recovery);
- combination: depth (SLM, and ShortGPT) + search-llm width against depth alone and width alone
  at the same total parameter count (about 0.79 and 0.66 of dense), before and after recovery;
- sparse: Wanda 50% and 2:4 before and after a recovery that keeps every zero.

    python benchmarks/recovery_bench.py --tags depth-shortgpt-6,sparse-wanda-0.5   # some chains
    python benchmarks/recovery_bench.py --table                                     # results so far

Chains are independent (a chain rebuilds its own prefix if missing), so two processes pinned to
one core each can run disjoint --tags. Writes results/recovery_bench.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import runner

DEPTH_CALIB = ["--calib", "c4", "--nsamples", "10", "--seqlen", "128", "--seed", "0"]     # as depth_methods.py
WIDTH_CALIB = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", "0"]     # as width_search.py
SPARSE_CALIB = ["--calib", "c4", "--nsamples", "32", "--seqlen", "2048", "--seed", "0"]   # as sparsity_baselines.py
DEPTH = {"slm": ["--method", "slm", "--merge", "rdsc"], "shortgpt": ["--method", "shortgpt"],
         "sleb": ["--method", "sleb"]}


def depth_stage(method: str, k: int) -> tuple[str, list[str]]:
    return f"{method}-{k}", [*DEPTH[method], "--remove-layers", str(k), *DEPTH_CALIB]


def width_stage(keep: float) -> tuple[str, list[str]]:
    return f"width-{keep}", ["--method", "search", "--keep", str(keep), *WIDTH_CALIB]


# Width keeps are fractions of the remaining blocks' projection parameters, chosen so that each
# row of a pair has the same total parameter count (depth 8 = 106.19M, depth 13 = 88.49M).
CHAINS = {
    **{f"depth-{m}-{k}": [depth_stage(m, k)] for m in DEPTH for k in (6, 10)},
    "combo-0.79-depth": [depth_stage("slm", 8)],
    "combo-0.79-width": [width_stage(0.7332)],
    "combo-0.79-both": [depth_stage("slm", 4), width_stage(0.8461)],
    "combo-0.66-depth": [depth_stage("slm", 13)],
    "combo-0.66-width": [width_stage(0.5665)],
    "combo-0.66-both": [depth_stage("slm", 6), width_stage(0.7082)],
    # the same pairs with ShortGPT as the depth stage: is the loss of depth + width SLM's or depth's?
    "combo-0.79-depth-shortgpt": [depth_stage("shortgpt", 8)],
    "combo-0.79-both-shortgpt": [depth_stage("shortgpt", 4), width_stage(0.8461)],
    "combo-0.66-depth-shortgpt": [depth_stage("shortgpt", 13)],
    "combo-0.66-both-shortgpt": [depth_stage("shortgpt", 6), width_stage(0.7082)],
    "sparse-wanda-0.5": [("wanda-0.5", ["--method", "wanda", "--sparsity", "0.5", *SPARSE_CALIB])],
    "sparse-wanda-2of4": [("wanda-2of4", ["--method", "wanda", "--pattern", "2:4", *SPARSE_CALIB])],
}


def recovery_flags(args) -> list[str]:
    return ["--data", "c4", "--steps", str(args.steps), "--batch-size", "2", "--grad-accum", "2",
            "--seqlen", "256", "--lr", str(args.lr), "--warmup-steps", "2", "--seed", "0",
            "--eval-every", "5", "--save-every", "1000"]


def stage_folders(work: Path, tag: str) -> list[Path]:
    """Each prune stage's folder, named by the chain prefix it holds (shared between chains)."""
    names = [n for n, _ in CHAINS[tag]]
    return [work / ("rec-" + "+".join(names[:i + 1])) for i in range(len(names))]


def run_chain(work: Path, tag: str, args) -> None:
    """Prune stages, recover, and for the depth chains the zero-shot tasks."""
    model = args.model
    for (_, flags), folder in zip(CHAINS[tag], stage_folders(work, tag)):
        extra = ["--trust-remote-code"] if "width" in model else []
        runner.prune(work, folder.name, model, args.eval_windows, [*flags, *extra], reuse=True)
        model = str(folder)
    out = Path(model + "-recovered")
    if not (out / "prunekit_report.json").exists():
        runner.run(runner.PRUNEKIT + ["recover", *runner.eval_args(model, args.eval_windows), "--trust-remote-code",
                                      *recovery_flags(args), "--output", str(out)])
    if tag.startswith("depth-") and args.limit:
        zero_shot(out, args.limit)


def collected(work: Path, tag: str) -> dict | None:
    """The chain's reports read back from its folders, None while it is unfinished (the folders are
    the record, so two processes never overwrite each other's rows)."""
    folders = stage_folders(work, tag)
    paths = [f / "prunekit_report.json" for f in folders] + [Path(str(folders[-1]) + "-recovered/prunekit_report.json")]
    if not all(p.exists() for p in paths):
        return None
    reports = [json.loads(p.read_text()) for p in paths]
    return {"stages": reports[:-1], "recovered": reports[-1]}


def zero_shot(folder: Path, limit: int) -> None:
    rep = json.loads((folder / "prunekit_report.json").read_text())
    if (rep.get("zero_shot") or {}).get("limit") != limit:
        runner.run(runner.PRUNEKIT + ["eval", "--model", str(folder), "--eval", "none", "--tasks", "all",
                                      "--limit", str(limit), "--trust-remote-code", "--save-to-model"])


def summary(chain: dict) -> dict:
    first, last, rec = chain["stages"][0], chain["stages"][-1], chain["recovered"]
    r = rec["recovery"]
    row = {"params": last["model"]["params_total"], "dense_params": first["lineage"][0]["params_before"],
           "ppl_before": last["eval"]["wikitext2"]["ppl"],
           "ppl_after": rec["eval"]["wikitext2"]["ppl"], "protocol": rec["eval"]["wikitext2"]["protocol"],
           "prune_s": sum(s["timing"]["prune_s"] for s in chain["stages"]), "tokens": r["tokens_seen"],
           "train_s": r["train_s"], "tokens_per_s": r["tokens_seen"] / r["train_s"],
           "peak_gb": r["peak_memory_gb"], "val_loss": [r["history"]["validation"][0]["loss"],
                                                         r["validation_loss_merged"]],
           "sparsity": [r.get("sparsity_before"), (rec.get("sparsity") or {}).get("overall")], "nm_valid": r.get("nm_valid")}
    zs = rec.get("zero_shot")
    if zs:
        row["zero_shot_after"] = {"average": zs.get("average"), "limit": zs.get("limit")}
    return row


def table(rows: dict) -> str:
    lines = ["| chain | params (of dense) | wt2 ppl before | after | val loss before -> after | "
             "zero-shot avg after | sparsity before/after | recovery tokens, s, tok/s, peak GB |",
             "|---|---|---|---|---|---|---|---|"]
    for tag, r in rows.items():
        zs = r.get("zero_shot_after")
        sp = "/".join(f"{s:.4f}" for s in r["sparsity"] if s is not None)
        nm = (r.get("nm_valid") or {}).get("2:4", {})
        if nm.get("before"):
            sp += f", 2:4 valid {nm['before']}/{nm['after']}"
        zs_cell = f"{zs['average']:.4f}" if zs else "-"
        lines.append(f"| {tag} | {r['params'] / 1e6:.2f}M ({r['params'] / r['dense_params']:.3f}) | "
                     f"{r['ppl_before']:.2f} | {r['ppl_after']:.2f} | {r['val_loss'][0]:.3f} -> {r['val_loss'][1]:.3f} | "
                     f"{zs_cell} | {sp} | {r['tokens']}, {r['train_s']:.0f}, {r['tokens_per_s']:.1f}, {r['peak_gb']:.2f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--eval-windows", type=int, default=16, help="first K windows of wt2-2048")
    ap.add_argument("--work", default=str(runner.HERE / "runs"), help="where checkpoints go (not committed)")
    ap.add_argument("--tags", default=",".join(CHAINS), help="comma-separated chains: " + ", ".join(CHAINS))
    ap.add_argument("--steps", type=int, default=20, help="optimiser steps of every recovery (4 x 256 tokens each)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--limit", type=int, default=50, help="zero-shot examples per task for the depth chains (0: skip)")
    ap.add_argument("--table", action="store_true", help="only print the table of the chains done so far")
    args = ap.parse_args()
    work = Path(args.work)
    if not args.table:
        for tag in args.tags.split(","):
            run_chain(work, tag, args)
    rows = runner.merge_results("recovery_bench",
                                {tag: summary(chain) for tag in CHAINS if (chain := collected(work, tag))})
    print(table({tag: rows[tag] for tag in CHAINS if tag in rows}))


if __name__ == "__main__":
    main()
