"""Benchmark: search-llm width pruning of SmolLM2-135M at keep 0.8 and 0.6.

Per target, four runs through the same path, on the same calibration windows:
  search      evolutionary search + ADMM reformation
  search-noreform   the same search (same seed, so the same sub-network) without reformation
  init        --generations 0: the importance initialisation alone (+ ADMM)
  magnitude   --generations 0 --score magnitude: channels ranked by weight norm (+ ADMM)
each evaluated on WikiText-2; then (--bench-only) the saved models' speed against dense.

    python benchmarks/width_search.py --reuse
    python benchmarks/width_search.py --reuse --bench-only
"""
from __future__ import annotations

import argparse
from pathlib import Path

import runner

VARIANTS = [("search", []), ("search-noreform", ["--reform", "none"]), ("init", ["--generations", "0"]),
            ("magnitude", ["--generations", "0", "--score", "magnitude"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=32, seqlen=512, eval_windows=16)
    ap.add_argument("--keeps", default="0.8,0.6")
    ap.add_argument("--variants", default=",".join(v for v, _ in VARIANTS))
    ap.add_argument("--search-flags", default="",
                    help="extra flags for every run, e.g. '--generations 8' (a variant's own flags still win)")
    ap.add_argument("--bench-only", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    chosen = [(v, f) for v, f in VARIANTS if v in args.variants.split(",")]
    tags = [(f"width-{v}-{k}", k, f) for k in args.keeps.split(",") for v, f in chosen]
    if args.bench_only:
        runner.bench(work, args.model, [t for t, *_ in tags], "width_bench", seqlen=512, prompt_len=128,
                     new_tokens=32, reps=9, warmup=1, trust_remote_code=True)
        return
    reports = {"dense": runner.dense(work, args.model, args.eval_windows)}
    common = ["--calib", args.calib, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
    for tag, keep, flags in tags:
        reports[tag] = runner.prune(work, tag, args.model, args.eval_windows,
                                    ["--method", "search", "--keep", keep, *common, *args.search_flags.split(), *flags],
                                    reuse=args.reuse)
        runner.save_results("width_search", reports)
    print(table(reports))


def table(reports: dict) -> str:
    dense = reports["dense"]["eval"]["wikitext2"]
    lines = [f"dense: {dense['ppl']:.2f} [{dense['protocol']}]", "",
             "| keep | variant | kept block params | params | wt2 ppl | fitness ppl (init -> best) | prune s |",
             "|---|---|---|---|---|---|---|"]
    for tag, r in reports.items():
        if tag == "dense":
            continue
        m = r["method"]
        lines.append(f"| {m['config']['keep']} | {tag.split('-', 1)[1].rsplit('-', 1)[0]} | {m['kept_fraction']:.4f} | "
                     f"{r['model']['params_total'] / 1e6:.1f}M | {r['eval']['wikitext2']['ppl']:.2f} | "
                     f"{_fitness(m, 'initial')} -> {_fitness(m, 'final')} | {r['timing']['prune_s']:.0f} |")
    return "\n".join(lines)


def _fitness(m: dict, which: str) -> str:
    """A report's start or final fitness (reports before --fitness named them *_ppl)."""
    old = {"initial": "initial_fitness_ppl", "final": "fitness_ppl"}[which]
    return f"{m.get(f'{which}_fitness', m.get(old)):.2f}"


if __name__ == "__main__":
    main()
