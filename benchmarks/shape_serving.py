"""Benchmark: shape_bench's run folders in real serving engines: does each load natively and decode as
transformers does, and how fast is it against dense; then the quality/speed frontier in one plot.

    python benchmarks/shape_serving.py --work runs/shape --phase all      # engines, speed, plot
    python benchmarks/shape_serving.py --table

Phases (results/shape_serving.json keeps each):
1. engines: serving/compare.py per folder, 16 greedy tokens of one prompt in vLLM's CPU build and
   llama.cpp (the vendored converter, f32 GGUF) against transformers; a DeciLM folder whose
   blocks llama.cpp cannot run as they are is also exported with `prunekit export --for llama.cpp`.
2. speed: a 128-token WikiText-2 prompt, 64 new tokens, one thread. llama.cpp: every GGUF that
   reproduces transformers, interleaved in one process, 5 rounds after a warm-up. vLLM: one process
   per model and round, models interleaved, --vllm-rounds rounds of 3 repeats.
3. plot: wt2 perplexity against decode tokens/s and prefill latency, both relative to dense,
   per engine: results/shape_frontier.png.
The engines run in their own virtual environments (serving/setup.sh).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "serving"))
import runner  # noqa: E402
import servable  # noqa: E402

NAME = "shape_serving"
TAGS = ["dense", "shape-0.8", "shortgpt-6", "shortgpt-sublayer-0.8", "width-mlp-0.8", "uniform-mlp-0.8",
        "shape-0.65", "shortgpt-10", "width-mlp-0.65"]


def folder(work: Path, tag: str, model: str) -> Path:
    return servable.dense_folder(work, model) if tag == "dense" else work / tag


def engines(work: Path, args, results: dict) -> None:
    out_dir = runner.HERE / "results" / "serving"
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag in args.tags:
        path = out_dir / f"{NAME}-{tag}.json"
        if not path.exists():
            runner.run([sys.executable, str(HERE / "serving" / "compare.py"), str(folder(work, tag, args.model)),
                        "--out", str(path)])
        results.setdefault(tag, {})["engines"] = servable.summarise(json.loads(path.read_text()))
        if tag != "dense":
            padded = servable.padded_for_llamacpp(work, tag, argparse.Namespace(model=args.model, reuse=True),
                                                  out_dir, NAME)
            if padded is not None:
                results[tag]["engines"]["llamacpp_export"] = padded
        runner.merge_results(NAME, {tag: results[tag]})


def speed(work: Path, args, results: dict) -> None:
    ids = servable.prompt_ids(args.model, 128)
    ggufs = {t: g for t in args.tags if (g := servable.servable_gguf(results.get(t, {}).get("engines") or {}))}
    lc, lc_protocol = servable.llamacpp_speed(ids, ggufs)
    native = [t for t in args.tags if ((results.get(t, {}).get("engines") or {}).get("vllm") or {}).get("native")]
    vl, vl_protocol = servable.vllm_speed(ids, {t: folder(work, t, args.model) for t in native}, args.vllm_rounds)
    for tag in args.tags:
        results[tag]["speed"] = {"llamacpp": lc.get(tag), "vllm": vl.get(tag)}
    results["_protocol"] = {"llamacpp": lc_protocol, "vllm": vl_protocol}
    runner.merge_results(NAME, results)


def quality(tag: str) -> dict | None:
    rep = json.loads((HERE / "results" / "shape_bench.json").read_text()).get(tag)
    return None if rep is None else {"ppl": rep["ppl"], "kl": rep["kl"], "kept": rep["kept_block_fraction"]}


def rows(results: dict) -> list[dict]:
    """One row per timed folder: quality from shape_bench.json, speed relative to dense."""
    dense = (results.get("dense") or {}).get("speed") or {}
    out = []
    for tag in TAGS:
        r = results.get(tag)
        q = quality(tag)
        if not r or not q or "speed" not in r:
            continue
        row = {"tag": tag, **q, "engines": r["engines"]}
        for eng in ("vllm", "llamacpp"):
            s, d = r["speed"].get(eng), dense.get(eng)
            row[eng] = None if not s or not d else {"decode": s["decode_tok_s"] / d["decode_tok_s"],
                                                     "prefill": s["prefill_s"] / d["prefill_s"],
                                                     "decode_tok_s": s["decode_tok_s"], "prefill_s": s["prefill_s"]}
        out.append(row)
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5), sharey=True)
    panels = [(e, m) for e in ("vllm", "llamacpp") for m in ("decode", "prefill")]
    for ax, (eng, metric) in zip(axes, panels):
        for r in rows(results):
            if r[eng] is None:
                continue
            colour = "C3" if r["tag"].startswith("shape") else ("C7" if r["tag"] == "dense" else "C0")
            ax.scatter(r[eng][metric], r["ppl"], color=colour)
            ax.annotate(r["tag"], (r[eng][metric], r["ppl"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{'decode tokens/s' if metric == 'decode' else 'prefill latency'} vs dense"
                      f" ({'higher' if metric == 'decode' else 'lower'} is better)")
        ax.set_title({"vllm": "vLLM (CPU)", "llamacpp": "llama.cpp"}[eng])
        ax.set_yscale("log")
    axes[0].set_ylabel("WikiText-2 perplexity (wt2-2048/16)")
    fig.suptitle("SmolLM2-135M: quality against real engine speed (red: evo-shape)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    lines = ["| model | kept block linears | wt2 ppl | KL | vLLM class | vLLM = HF | llama.cpp arch | llama.cpp = HF "
             "| vLLM decode vs dense | vLLM prefill vs dense | llama.cpp decode vs dense | llama.cpp prefill vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cell = lambda x, f: "-" if x is None else f.format(x)
    for r in rows(results):
        v, lc = r["engines"]["vllm"], r["engines"].get("llamacpp_export") or r["engines"]["llamacpp"]
        arch = lc["arch"] + (" (export)" if r["engines"].get("llamacpp_export") else "")
        lines.append(f"| {r['tag']} | {r['kept']:.3f} | {r['ppl']:.2f} | {r['kl']:.3f} | {v['class']} | "
                     f"{'yes' if v['same_tokens'] else 'no'} | {arch} | {'yes' if lc['same_tokens'] else 'no'} | "
                     f"{cell(r['vllm'] and r['vllm']['decode'], '{:.3f}')} | "
                     f"{cell(r['vllm'] and r['vllm']['prefill'], '{:.3f}')} | "
                     f"{cell(r['llamacpp'] and r['llamacpp']['decode'], '{:.3f}')} | "
                     f"{cell(r['llamacpp'] and r['llamacpp']['prefill'], '{:.3f}')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--work", default=str(runner.HERE / "runs" / "shape"), help="shape_bench.py's run folders")
    ap.add_argument("--phase", choices=("all", "engines", "speed", "plot"), default="all")
    ap.add_argument("--tags", default=",".join(TAGS))
    ap.add_argument("--vllm-rounds", type=int, default=2)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    args.tags = args.tags.split(",")
    work = Path(args.work)
    path = HERE / "results" / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if not args.table:
        if args.phase in ("all", "engines"):
            engines(work, args, results)
        if args.phase in ("all", "speed"):
            speed(work, args, results)
        plot(results, HERE / "results" / "shape_frontier.png")
    print(table(results))


if __name__ == "__main__":
    main()
