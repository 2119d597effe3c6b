"""Follow-up of depth_methods.py: is SLM's loss due to the blocks it picks, or to merging them?

For each SLM run folder, the windows it merged are rebuilt from the dense model three ways and
evaluated under the run's own perplexity protocol:
  merged  - the run itself (base + summed differences, or top projections), from its report;
  base    - the same windows, keeping only each window's lowest block (the others removed);
  top     - the same windows, keeping only each window's highest block.
If `base`/`top` are close to the removal baselines, the block choice is fine and merging is what
hurts; if they are as bad as `merged`, the choice itself is poor.

    python benchmarks/slm_ablation.py runs/depth-slm-rdsc-6 runs/depth-slm-rdsc-10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import runner


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="SLM run folders written by prunekit prune")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--name", default="slm_ablation")
    args = ap.parse_args()

    from prunekit.eval.ppl import eval_tokens, perplexity_of_ids, protocol_label
    from prunekit.methods.depth.rebuild import apply_plan
    from prunekit.models.adapter import ModelAdapter
    from prunekit.models.loading import load_model

    out = {}
    for run in args.runs:
        report = json.loads((Path(run) / "prunekit_report.json").read_text())
        groups = report["method"]["depth"]["groups"]
        ev = report["eval"]["wikitext2"]
        seqlen, windows = ev["seqlen"], ev["windows"]
        row = {"groups": groups, "protocol": ev["protocol"], "merged": ev["ppl"]}
        text = None
        for keep in ("base", "top"):
            model, tok, _ = load_model(args.model)
            text = text or eval_tokens("wikitext2", tok, seqlen)
            kept = [g[0] if keep == "base" else g[-1] for g in groups]
            apply_plan(ModelAdapter(model), [[i] for i in kept])
            res = perplexity_of_ids(model, text.ids, seqlen, windows, "cpu", True, desc=f"{Path(run).name} {keep}")
            assert protocol_label(text.info["short"], seqlen, res["windows"], res["windows_total"]) == ev["protocol"]
            row[keep] = res["ppl"]
            row[f"{keep}_removed"] = [i for g in groups for i in g if i not in kept]
            print(f"{Path(run).name}: {keep} {res['ppl']:.2f} (merged {ev['ppl']:.2f}) [{ev['protocol']}]", flush=True)
        out[Path(run).name] = row
        runner.save_results(args.name, out)


if __name__ == "__main__":
    main()
