"""Benchmark: evolutionary search (EvoPress-style, KL fitness, staged selection) on
SmolLM2-135M against the one-shot allocations it should beat, all evaluated on WikiText-2 test
(`wt2-2048/16`, as the depth benchmark), which no search sees.

    python benchmarks/evo_search.py --part depth --reuse       # evo-depth at 6 and 10 blocks
    python benchmarks/evo_search.py --part sparsity --reuse    # uniform SparseGPT, OWL, evo-sparsity at 70/80%
    python benchmarks/evo_search.py --part width --bench       # search-llm: ppl vs KL-staged fitness, width multiples
    python benchmarks/evo_search.py --part width --width-reform none   # the same two searches without ADMM
    python benchmarks/evo_search.py --part width --width-reform admm   # ADMM kept only where it helps
    python benchmarks/evo_search.py --part width --width-reform admm --width-only ppl --width-ppl-generations 10
    python benchmarks/evo_search.py --part width --width-reform admm --width-only kl \
        --width-stages 256:8,1024:4 --width-kl-generations 4          # about the same search time as the line above
    python benchmarks/evo_search.py --part executors           # one small search under each executor

The depth baselines (ShortGPT, SLEB, SLM) come from benchmarks/results/depth_methods.json (same
evaluation). Search budgets are CPU-sized and given on the command line below (defaults of this
script), far below EvoPress's: the tables state them. Writes benchmarks/results/evo_search.json
and copies each run's evolution.png to benchmarks/results/<tag>-evolution.png.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import runner


def depth_runs(args) -> list[tuple[str, list[str]]]:
    calib = ["--calib", "c4", "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
    search = ["--stages", args.depth_stages, "--generations", str(args.generations), "--offspring",
              str(args.offspring)]
    # ShortGPT on the same calibration is evo-depth's starting point: what the search itself adds
    return [run for k in (6, 10) for run in
            ((f"evo-depth-{k}", ["--method", "evo-depth", "--remove-layers", str(k), *calib, *search]),
             (f"shortgpt-same-calib-{k}", ["--method", "shortgpt", "--remove-layers", str(k), *calib]))]


def sparsity_runs(args) -> list[tuple[str, list[str]]]:
    calib = ["--calib", "c4", "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
    search = ["--stages", args.sparsity_stages, "--generations", str(args.sparsity_generations),
              "--offspring", str(args.offspring)]
    runs = []
    for s in ("0.7", "0.8"):
        pct = int(float(s) * 100)
        runs += [(f"uniform-sparsegpt-{pct}", ["--method", "sparsegpt", "--sparsity", s, *calib]),
                 (f"owl-sparsegpt-{pct}", ["--method", "owl", "--base", "sparsegpt", "--sparsity", s, *calib]),
                 (f"evo-sparsity-{pct}", ["--method", "evo-sparsity", "--base", "sparsegpt", "--sparsity", s,
                                          *calib, *search]),
                 # the database on dense inputs (the first design) and its starting point: every block
                 # at the target level, pruned independently where uniform SparseGPT prunes sequentially
                 (f"evo-sparsity-dense-{pct}", ["--method", "evo-sparsity", "--base", "sparsegpt", "--sparsity", s,
                                                "--database-inputs", "dense", *calib, *search]),
                 (f"evo-sparsity-dense-start-{pct}", ["--method", "evo-sparsity", "--base", "sparsegpt",
                                                      "--sparsity", s, "--database-inputs", "dense", *calib,
                                                      "--generations", "0"])]
    return runs


def width_runs(args) -> list[tuple[str, list[str]]]:
    """search-llm at keep 0.8 (the width benchmark's calibration and loop): perplexity fitness on
    2 x 256 tokens as the paper, against KL with staged selection, free widths and multiples of 64."""
    calib = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", str(args.width_seed)]
    base = ["--method", "search", "--keep", "0.8", *calib]
    staged = ["--fitness", "kl", "--stages", args.width_stages, "--generations", str(args.width_kl_generations)]
    # the searches do not depend on the reformation: the same masks, reformed three ways
    base += ["--reform", args.width_reform]
    # one more search, named by its budget, for comparisons at equal wall time
    seed = f"-s{args.width_seed}" if args.width_seed else ""
    if args.width_only == "kl":
        return [(f"width-kl-{args.width_stages}-g{args.width_kl_generations}-{args.width_reform}{seed}",
                 [*base, *staged])]
    if args.width_only == "ppl":
        return [(f"width-ppl-g{args.width_ppl_generations}-{args.width_reform}{seed}",
                 [*base, "--generations", str(args.width_ppl_generations)])]
    if args.width_reform != "admm-always":
        suffix = {"none": "-noreform", "admm": "-admm-checked"}[args.width_reform]
        return [(f"width-ppl{suffix}", [*base, "--generations", str(args.width_ppl_generations)]),
                (f"width-kl-staged{suffix}", [*base, *staged])]
    return [("width-ppl", [*base, "--generations", str(args.width_ppl_generations)]),
            ("width-kl-staged", [*base, *staged]),
            ("width-kl-staged-m64", [*base, *staged, "--width-multiple", "64"])]


def executor_runs(args) -> list[tuple[str, list[str]]]:
    base = ["--method", "evo-depth", "--remove-layers", "6", "--calib", "c4", "--nsamples", str(args.nsamples),
            "--seqlen", str(args.seqlen), "--seed", "0", "--stages", args.depth_stages, "--generations", "3",
            "--offspring", "4", "--eval", "none"]
    return [("exec-local", base), ("exec-workers2", [*base, "--workers", "2"]),
            ("exec-ray2", [*base, "--executor", "ray", "--workers", "2"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=32, seqlen=128, eval_windows=16)
    ap.add_argument("--part", choices=("depth", "sparsity", "width", "executors"), required=True)
    ap.add_argument("--width-stages", default="512:8,2048:4")
    ap.add_argument("--width-ppl-generations", type=int, default=6)
    ap.add_argument("--width-kl-generations", type=int, default=4)
    ap.add_argument("--width-reform", choices=("admm-always", "admm", "none"), default="admm-always",
                    help="with --part width: the ppl and KL searches reformed by ADMM always (the first rows), "
                         "by ADMM where it lowers the search's fitness (admm, the product's default), or not")
    ap.add_argument("--width-only", choices=("ppl", "kl"), default=None,
                    help="with --part width: only the ppl search (--width-ppl-generations) or only the KL search "
                         "(--width-stages, --width-kl-generations), tagged by its budget")
    ap.add_argument("--width-seed", type=int, default=0,
                    help="with --part width: the seed of the calibration draw and the search (tags get -sN)")
    ap.add_argument("--bench", action="store_true", help="with --part width: prefill/decode speed against dense")
    ap.add_argument("--generations", type=int, default=12, help="evo-depth generations")
    ap.add_argument("--sparsity-generations", type=int, default=12, help="evo-sparsity generations")
    ap.add_argument("--offspring", type=int, default=8)
    ap.add_argument("--depth-stages", default="512:2,2048:1")
    ap.add_argument("--sparsity-stages", default="512:2,2048:1")
    args = ap.parse_args()
    work = Path(args.work)
    runs = {"depth": depth_runs, "sparsity": sparsity_runs, "width": width_runs,
            "executors": executor_runs}[args.part](args)
    path = runner.HERE / "results" / "evo_search.json"
    reports = json.loads(path.read_text()) if path.exists() else {}
    if args.part != "executors":
        reports["dense"] = runner.dense(work, args.model, args.eval_windows)
    for tag, flags in runs:
        if args.part == "executors":
            out = work / tag
            runner.run(runner.PRUNEKIT + ["prune", "--model", args.model, *flags, "--output", str(out),
                                          "--overwrite"])
            reports[tag] = json.loads((out / "prunekit_report.json").read_text())
        else:
            reports[tag] = runner.prune(work, tag, args.model, args.eval_windows, flags, reuse=args.reuse)
        png = work / tag / "evolution.png"
        if png.exists():
            shutil.copy(png, runner.HERE / "results" / f"{tag}-evolution.png")
        runner.merge_results("evo_search", {k: reports[k] for k in ("dense", tag) if k in reports})
    if args.part == "width" and args.bench:
        reports["width_bench"] = runner.bench(work, args.model, [t for t, _ in runs], "evo_width_bench", seqlen=512,
                                              prompt_len=128, new_tokens=32, reps=5, warmup=1)
        runner.merge_results("evo_search", {"width_bench": reports["width_bench"]})
    print(table(reports))


def table(reports: dict) -> str:
    lines = ["| run | method | wt2 ppl | fitness start → end | search s | evaluations | choice |", "|---|---|---|---|---|---|---|"]
    for tag, r in reports.items():
        if tag in ("dense", "width_bench") or tag.startswith("_"):   # _runs: the registry's provenance
            continue
        m = r["method"]
        ppl = r.get("eval", {}).get("wikitext2", {}).get("ppl")
        fit = (f"{m['initial_fitness']:.4f} → {m['final_fitness']:.4f}" if "final_fitness" in m else "")
        choice = m.get("block_levels") or m.get("removed") or m.get("depth", {}).get("groups", "")
        if isinstance(choice, list):
            choice = " ".join(map(str, choice))
        lines.append(f"| {tag} | {m.get('name')} | {ppl if ppl is None else f'{ppl:.2f}'} | {fit} | "
                     f"{m.get('search_s', 0):.0f} | {m.get('evaluations', '')} | {str(choice)[:80]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
