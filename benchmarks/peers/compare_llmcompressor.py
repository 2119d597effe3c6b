"""prunekit against llm-compressor on SmolLM2-135M under one protocol: the same calibration
windows (prunekit's C4 sampling, seed 0, handed to llm-compressor as token ids), the same
checkpoint, the same evaluation (`prunekit eval`, WikiText-2), each pruning in its own process.

    bash benchmarks/peers/setup_llmcompressor.sh
    python benchmarks/peers/compare_llmcompressor.py --nsamples 16 --seqlen 1024 --eval-windows 8

Writes benchmarks/results/peer_llmcompressor.json and prints a Markdown table. The achieved
sparsity of every peer output is measured by prunekit, not taken from the peer.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runner  # noqa: E402

PEER_PY = Path(__file__).resolve().parent / ".venv-llmcompressor" / "bin" / "python"
CONFIGS = [("sparsegpt", 0.5, None), ("sparsegpt", 0.5, "2:4"), ("sparsegpt", 0.5, "4:8"),
           ("wanda", 0.5, None), ("wanda", 0.5, "2:4"), ("wanda", 0.5, "4:8"),
           ("magnitude", 0.5, None), ("magnitude", 0.5, "2:4"), ("magnitude", 0.5, "4:8")]


def dump_windows(model_spec, calib, nsamples, seqlen, path: Path) -> str:
    import torch
    import prunekit
    model, tok, source = prunekit.load_model(model_spec)
    cal = prunekit.build_calibration(calib, model, tok, nsamples, seqlen, 0)
    torch.save(cal.input_ids, path)
    from prunekit.models.loading import _gguf_cache_path
    return str(_gguf_cache_path(source.gguf)) if source.gguf else source.path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=16, seqlen=1024, eval_windows=8)
    ap.add_argument("--only", default=None, help="comma-separated indices into CONFIGS")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    windows = work / f"calib-{args.calib}-{args.nsamples}x{args.seqlen}-seed0.pt"
    model_dir = dump_windows(args.model, args.calib, args.nsamples, args.seqlen, windows)
    reports = {"dense": runner.dense(work, args.model, args.eval_windows)}
    picked = CONFIGS if not args.only else [CONFIGS[int(i)] for i in args.only.split(",")]
    for method, sparsity, mask in picked:
        tag = f"{method}-{mask.replace(':', 'of') if mask else sparsity}-{args.nsamples}x{args.seqlen}"
        flags = ["--method", method, *(["--pattern", mask] if mask else ["--sparsity", str(sparsity)]),
                 "--calib", args.calib, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--seed", "0"]
        ours = runner.prune(work, f"pk-{tag}", args.model, args.eval_windows, flags, reuse=args.reuse)
        peer_out, err_file = work / f"llmc-{tag}", work / f"llmc-{tag}.error.json"
        peer = {}
        if not (args.reuse and (peer_out / "prunekit_report.json").exists()):
            err_file.unlink(missing_ok=True)
            cmd = [str(PEER_PY), str(Path(__file__).with_name("llmc_prune.py")), "--model", model_dir,
                   "--windows", str(windows), "--method", method, "--sparsity", str(sparsity),
                   "--mask", mask or "0:0", "--output", str(peer_out) + ".tmp", "--error-file", str(err_file)]
            print("+", " ".join(cmd), flush=True)
            ok = subprocess.run(cmd).returncode == 0
            if ok:
                peer_run = json.loads((Path(str(peer_out) + ".tmp") / "peer_report.json").read_text())
                runner.run(runner.PRUNEKIT + ["eval", *runner.eval_args(str(peer_out) + ".tmp", args.eval_windows),
                                              "--output", str(peer_out)])
                rep = json.loads((peer_out / "prunekit_report.json").read_text())
                rep["peer"] = peer_run
                (peer_out / "prunekit_report.json").write_text(json.dumps(rep, indent=2))
        if (peer_out / "prunekit_report.json").exists():
            peer = json.loads((peer_out / "prunekit_report.json").read_text())
            measured = peer["sparsity"]["overall"]
            extra_zeros = peer["model"]["params_total"] - peer["model"]["params_nonzero"] - \
                (ours["model"]["params_total"] - ours["model"]["params_nonzero"])
            if measured < 0.9 * sparsity:   # a recipe that silently prunes nothing is no comparison
                peer = {"error": f"ran, but only {measured:.4f} of the block linears are zero (target {sparsity})"}
            elif extra_zeros > 0.001 * ours["model"]["params_total"]:   # pruned outside the blocks (embeddings)
                peer = {"error": f"pruned {extra_zeros:,} weights outside the decoder-block linears"}
        elif err_file.exists():
            peer = {"error": json.loads(err_file.read_text())["error"]}
        reports[tag] = {"prunekit": ours, "llmcompressor": peer}
    runner.save_results("peer_llmcompressor", reports)
    print(table(reports))


def table(reports: dict) -> str:
    d = reports["dense"]["eval"]["wikitext2"]
    lines = [f"Dense: {d['ppl']:.2f} [{d['protocol']}]", "",
             "| method | pattern | PPL prunekit | PPL llm-compressor | PPL ratio | prune s prunekit | prune s llm-c | time ratio "
             "| peak RSS GB prunekit | peak RSS GB llm-c | RSS ratio | llm-c measured sparsity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tag, r in reports.items():
        if tag == "dense":
            continue
        ours, peer = r["prunekit"], r["llmcompressor"]
        cfg = ours["method"]["config"]
        head = f"| {ours['method']['name']} | {cfg['pattern'] or 'unstructured 50%'} | {ours['eval']['wikitext2']['ppl']:.2f} "
        if "error" in peer:
            lines.append(head + f"| error: {peer['error']} | | {ours['timing']['prune_s']:.1f} | | | "
                         f"{ours['timing']['peak_rss_gb']:.2f} | | | |")
            continue
        pp, po = peer["eval"]["wikitext2"]["ppl"], ours["eval"]["wikitext2"]["ppl"]
        ts, to = peer["peer"]["prune_s"], ours["timing"]["prune_s"]
        ms, mo = peer["peer"]["peak_rss_gb"], ours["timing"]["peak_rss_gb"]
        lines.append(head + f"| {pp:.2f} | {po / pp:.3f} | {to:.1f} | {ts:.1f} | {to / ts:.3f} | {mo:.2f} | {ms:.2f} | "
                     f"{mo / ms:.3f} | {peer['sparsity']['overall']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
