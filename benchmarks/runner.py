"""Shared plumbing of the benchmark scripts: every configuration runs as its own `prunekit`
process (its wall time and peak RSS are its own) and leaves its prunekit_report.json."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRUNEKIT = [sys.executable, "-m", "prunekit"]


def common_args(ap, nsamples: int, seqlen: int, eval_windows: int):
    """The flags every benchmark script shares."""
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="c4")
    ap.add_argument("--nsamples", type=int, default=nsamples)
    ap.add_argument("--seqlen", type=int, default=seqlen)
    ap.add_argument("--eval-windows", type=int, default=eval_windows, help="first K windows of wt2-2048; 0 = all")
    ap.add_argument("--work", default=str(HERE / "runs"), help="where checkpoints go (not committed)")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose report already exists")


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


DEVICE = ["--device", "cpu"]   # set by a script's --device


def eval_args(model: str, windows: int | None, seqlen: int = 2048) -> list[str]:
    """Evaluation flags; windows None or 0 means every window of the test set."""
    win = ["--eval-windows", str(windows)] if windows else []
    return ["--model", model, "--eval", "wikitext2", "--eval-seqlen", str(seqlen), *win, "--overwrite", *DEVICE]


def dense(work: Path, model: str, windows: int) -> dict:
    out = work / "dense"
    if not (out / "prunekit_report.json").exists():
        run(PRUNEKIT + ["eval", *eval_args(model, windows), "--output", str(out)])
    return json.loads((out / "prunekit_report.json").read_text())


def prune(work: Path, tag: str, model: str, windows: int, flags: list[str], reuse: bool = False) -> dict:
    out = work / tag
    if not (reuse and (out / "prunekit_report.json").exists()):
        t0 = time.perf_counter()
        run(PRUNEKIT + ["prune", *eval_args(model, windows), *flags, "--output", str(out)])
        rep = json.loads((out / "prunekit_report.json").read_text())
        rep["process_wall_s"] = time.perf_counter() - t0
        (out / "prunekit_report.json").write_text(json.dumps(rep, indent=2))
    return json.loads((out / "prunekit_report.json").read_text())


def save_results(name: str, reports: dict) -> Path:
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / f"{name}.json"
    path.write_text(json.dumps(reports, indent=2))
    return path


def merge_results(name: str, rows: dict) -> dict:
    """Write `rows` into results/<name>.json as the file is now and return the whole: rows of runs
    side by side (one per core) or of run folders since removed (another machine) are kept."""
    path = HERE / "results" / f"{name}.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(rows)
    save_results(name, current)
    return current


def bench(work: Path, model: str, tags: list[str], name: str, **kw) -> dict:
    """Speed of each run folder against the dense model, the pair timed in interleaved rounds in
    two fresh processes (so every ratio has its own dense measurement); saved to
    results/<name>.json and into each run's report, where `prunekit compare` reads it."""
    from prunekit.export.save import update_report
    from prunekit.eval.speed import measure_many, ratios
    out = {}
    for tag in tags:
        pruned, dense = measure_many([str(work / tag), model], **kw)
        pruned["ratios"] = r = ratios(pruned, dense)
        out[tag], out[f"{tag}:dense"] = pruned, dense
        update_report(str(work / tag), {"bench": {"pruned": pruned, "baseline": dense, "ratios": r}})
        save_results(name, out)
        print(f"{tag}: layers {r['layers']:.3f} params {r['params']:.3f} prefill {r['prefill_latency']:.3f} "
              f"decode {r['decode_tokens_per_s']:.3f} disk {r.get('disk', float('nan')):.3f}", flush=True)
    return out
