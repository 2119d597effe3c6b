"""The prepared GPU check (benchmarks/gpu/run.sh calls this): every step writes into one results
JSON as soon as it ends, so a run cut short keeps what it measured.

Steps
  cuda_tests   pytest of the CUDA tests (tests/e2e/test_cuda.py and test_cuda_prepared.py; all skip
               without CUDA)
  smollm2      SmolLM2-135M (the smollm2-135m alias): magnitude, wanda, sparsegpt 2:4, sparsellm,
               shortgpt, search-llm, evo-sparsity on --device against the same run on the CPU: zero
               masks compared weight by weight (equal where the math is exact: magnitude; wanda and
               the solvers within float rounding, so a handful of flipped weights is reported, not
               hidden), structures (removed blocks, kept widths) compared, WikiText-2 perplexity of
               both within PPL_RTOL, and the seconds of each run
  stream_1p5b  a random Llama of about 1.5 B parameters (tools/make_random_checkpoint.py) pruned by
               wanda streamed on --device: seconds per block
  recover_kd   SmolLM2 with 6 blocks removed (ShortGPT), recovered on --device by LoRA on the lm loss,
               LoRA on the teacher's KL and full training on the KL (10 steps of 4 x 256 C4 tokens each):
               tokens per second, the teacher's share of training, peak memory, the last held-out losses
  llmcompressor, zeroshot  recorded as not carried (their wheels do not fit: see BENCHMARKS.md)

--quick: tiny budgets (a 2e7-parameter random model, 2 calibration windows of 32 tokens, the
sparsity methods on SmolLM2's first two blocks) so that
`--device cpu --quick` runs the whole script on a CPU in minutes. With --device cpu the CPU
reference is a second CPU run (which checks the comparison itself: equal masks expected).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CARRY = HERE / "carry"
PPL_RTOL = 0.01            # CUDA vs CPU perplexity: relative difference accepted (float32, other kernels)

# step -> (estimated seconds on one H100/H200 at full budget, estimated seconds on 2 CPU cores --quick)
ESTIMATES = {"setup": (15, 2), "cuda_tests": (60, 15), "stream_1p5b": (120, 30), "smollm2": (240, 200),
             "recover_kd": (60, 120),
             "llmcompressor": (0, 0), "zeroshot": (0, 0)}
DESCRIPTIONS = {
    "cuda_tests": "pytest of tests/e2e/test_cuda*.py (skip without CUDA)",
    "smollm2": "SmolLM2-135M: 7 methods on the device vs the CPU (masks, structure, WikiText-2 ppl, seconds)",
    "stream_1p5b": "random Llama ~1.5 B made on the machine, wanda streamed on the device: seconds per block",
    "recover_kd": "SmolLM2 ShortGPT-6 recovered by LoRA-lm, LoRA-kd and full-kd: tokens/s, teacher share, memory",
    "llmcompressor": "llm-compressor SparseGPT/Wanda: not carried (wheels do not fit), recorded as such",
    "zeroshot": "lm-eval zero-shot: not carried (wheels do not fit), recorded as such",
}

FULL = dict(nsamples=16, seqlen=256, eval_windows=8, eval_seqlen=512, params=1.5e9, hidden=2048,
            stream_nsamples=16, stream_seqlen=512)
QUICK = dict(nsamples=2, seqlen=32, eval_windows=2, eval_seqlen=64, params=2e7, hidden=256,
             stream_nsamples=2, stream_seqlen=32)


def method_configs(quick: bool, db: str):
    from prunekit.methods import (EvoSparsityConfig, MagnitudeConfig, SearchConfig, ShortGPTConfig,
                                  SparseGPTConfig, SparseLLMConfig, WandaConfig)
    search = dict(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05,
                  fitness_seqlen=16 if quick else 128, admm_iters=2 if quick else 5)
    layers = {"layers": "0:2"} if quick else {}     # --quick: the per-linear solvers on two blocks only
    return {
        "magnitude": MagnitudeConfig(sparsity=0.5, **layers),
        "wanda": WandaConfig(sparsity=0.5, **layers),
        "sparsegpt-2:4": SparseGPTConfig(pattern="2:4", **layers),
        "sparsellm": SparseLLMConfig(sparsity=0.5, iterations=1 if quick else 2, **layers),
        "shortgpt": ShortGPTConfig(remove_layers=6),
        "search-llm": SearchConfig(**search),
        "evo-sparsity": EvoSparsityConfig(sparsity=0.5, base="wanda", stages="32:1" if quick else "32:2,64:1",
                                          generations=1 if quick else 2, offspring=2, database_dir=db),
    }


class Results:
    def __init__(self, path: Path, args):
        self.path = path
        self.data = {"script": "benchmarks/gpu/run.sh", "device": args.device, "quick": args.quick,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                     "python": platform.python_version(), "ppl_rtol": PPL_RTOL, "steps": {}}
        try:
            import torch
            import transformers
            self.data["torch"], self.data["transformers"] = torch.__version__, transformers.__version__
            if torch.cuda.is_available():
                self.data["gpu"] = torch.cuda.get_device_name(0)
        except Exception as e:   # noqa: BLE001 (recorded, not fatal)
            self.data["import_error"] = repr(e)

    def step(self, name: str, value: dict) -> None:
        self.data["steps"][name] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def data_dir() -> str:
    carried = CARRY / "a" / "data"
    if (carried / "wikitext2" / "test.txt").is_file():
        return str(carried)
    return os.environ.get("PRUNEKIT_DATA_DIR") or str(ROOT.parent / "shared" / "data")


# ---- steps ----

def step_cuda_tests(args) -> dict:
    tests = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("test_cuda*.py"))]
    if not tests:
        return {"status": "error", "error": "no test_cuda*.py under tests/"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests],
                          cwd=ROOT, capture_output=True, text=True, timeout=args.step_timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode, "file": tests,
            "summary": tail[-1] if tail else "", "tail": tail, "seconds": round(time.perf_counter() - t, 1)}


def _masks(model) -> list:
    from prunekit.models.adapter import ModelAdapter
    return [(name, (lin.weight == 0).cpu()) for name, lin in ModelAdapter(model).all_linears()]


def _structure(model) -> dict:
    from prunekit.models.adapter import ModelAdapter
    a = ModelAdapter(model)
    return {"layers": a.num_layers,
            "shapes": [tuple(lin.weight.shape) for _, lin in a.all_linears()]}


def _run_method(model, cfg, ids, device, ppl_ids, p, batch=None) -> dict:
    import torch
    import prunekit
    from prunekit.eval.ppl import perplexity_of_ids

    m = copy.deepcopy(model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    res = prunekit.prune(m, copy.deepcopy(cfg), ids, device=device, progress=False, batch=batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    out = res.model
    ppl = perplexity_of_ids(out, ppl_ids, seqlen=p["eval_seqlen"], windows=p["eval_windows"], device=device,
                            progress=False)["ppl"]
    return {"seconds": round(seconds, 2), "ppl": ppl, "sparsity": (res.sparsity or {}).get("overall"),
            "masks": _masks(out), "structure": _structure(out),
            "removed": res.details.get("removed") if isinstance(res.details, dict) else None}


def step_smollm2(args) -> dict:
    import torch
    from prunekit.data.calibration import build_calibration
    from prunekit.eval.ppl import eval_tokens, perplexity_of_ids
    from prunekit.models.loading import load_model

    p = QUICK if args.quick else FULL
    t = time.perf_counter()
    model, tok, source = load_model(args.model, "float32")
    model.eval()
    load_s = time.perf_counter() - t
    ids = build_calibration("c4", model, tok, p["nsamples"], p["seqlen"], 0, data_dir()).input_ids
    ppl_ids = eval_tokens("wikitext2", tok, p["eval_seqlen"], data_dir()).ids
    out = {"model": args.model, "source": source.kind, "load_s": round(load_s, 1),
           "calibration": {"dataset": "c4", "nsamples": p["nsamples"], "seqlen": p["seqlen"]},
           "eval": {"dataset": "wikitext2", "windows": p["eval_windows"], "seqlen": p["eval_seqlen"]}, "methods": {}}
    dense = {}
    for dev in dict.fromkeys(["cpu", args.device]):
        dense[dev] = perplexity_of_ids(model, ppl_ids, seqlen=p["eval_seqlen"], windows=p["eval_windows"],
                                       device=dev, progress=False)["ppl"]
    out["dense_ppl"] = dense
    with tempfile.TemporaryDirectory() as db:
        # one database folder per side: the CPU reference must not reuse evo-sparsity's database built on the device
        cpu_configs = method_configs(args.quick, os.path.join(db, "cpu"))
        for name, cfg in method_configs(args.quick, os.path.join(db, "device")).items():
            if args.only and name not in args.only:
                continue
            row = {}
            try:
                d = _run_method(model, cfg, ids, args.device, ppl_ids, p)     # the device first
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                row = {"device_s": d["seconds"], "ppl": d["ppl"], "sparsity": d["sparsity"]}
                # the CPU reference; with --device cpu a second CPU run, which checks the comparison
                c = _run_method(model, cpu_configs[name], ids, "cpu", ppl_ids, p)
                flips = total = 0
                for (_, a), (_, b) in zip(d["masks"], c["masks"]):
                    if a.shape == b.shape:
                        flips += int((a != b).sum())
                        total += a.numel()
                row.update({"cpu_s": c["seconds"], "cpu_ppl": c["ppl"],
                            "speedup": round(c["seconds"] / max(d["seconds"], 1e-9), 2),
                            "structure_equal": d["structure"] == c["structure"],
                            "mask_flips": flips, "mask_flip_fraction": flips / total if total else None,
                            "masks_equal": flips == 0 and d["structure"] == c["structure"],
                            "ppl_rel_diff": abs(d["ppl"] - c["ppl"]) / c["ppl"]})
                row["ppl_within_tolerance"] = row["ppl_rel_diff"] <= PPL_RTOL
                row["status"] = "ok" if math.isfinite(d["ppl"]) else "non-finite ppl"
            except Exception as e:   # noqa: BLE001 (one method's failure must not lose the others)
                row = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            out["methods"][name] = row
            print(f"  {name}: {json.dumps(row, default=str)}", flush=True)
            if RESULTS is not None:        # saved method by method: a call cut at its limit keeps them
                RESULTS.step("smollm2", {**out, "status": "partial"})
    bad = [n for n, r in out["methods"].items() if r.get("status") != "ok"]
    out["status"] = "ok" if not bad else f"{len(bad)} of {len(out['methods'])} methods failed: {', '.join(bad)}"
    return out


def step_recover_kd(args) -> dict:
    from prunekit.api import prune
    from prunekit.data.calibration import build_calibration
    from prunekit.methods import ShortGPTConfig
    from prunekit.models.loading import load_model
    from prunekit.recovery import RecoveryConfig, recover

    dense, tok, _ = load_model(args.model, "float32")
    dense.eval()
    ids = build_calibration("c4", dense, tok, 10, 128, 0, data_dir()).input_ids
    pruned = prune(copy.deepcopy(dense), ShortGPTConfig(remove_layers=6), ids, progress=False).model
    steps, seqlen = (2, 32) if args.quick else (10, 256)
    out = {"model": args.model, "pruned": "shortgpt, 6 of 30 blocks", "steps": steps, "seqlen": seqlen, "runs": {}}
    modes = {"lora-lm": dict(), "lora-kd": dict(loss="kd"), "full-kd": dict(loss="kd", train="full", lr=1e-4)}
    for name, extra in modes.items():
        cfg = RecoveryConfig(**{"steps": steps, "seqlen": seqlen, "batch_size": 2, "grad_accum": 2, "lr": 3e-4,
                                "warmup_steps": 2, "eval_every": steps, "save_every": 1000, "device": args.device,
                                **extra})
        try:
            res = recover(copy.deepcopy(pruned), cfg, data="c4", tokenizer=tok, data_dir=data_dir(),
                          teacher=dense if cfg.loss != "lm" else None, progress=False)
            r = res.report["recovery"]
            out["runs"][name] = {"tokens": r["tokens_seen"], "train_s": round(r["train_s"], 2),
                                 "tokens_per_s": round(r["tokens_this_run"] / max(r["train_s"], 1e-9), 1),
                                 "teacher_share": r.get("teacher_share"), "peak_memory_gb": r["peak_memory_gb"],
                                 "peak_memory_kind": r["peak_memory_kind"],
                                 "last_validation": r["history"]["validation"][-1], "status": "ok"}
        except Exception as e:   # noqa: BLE001 (recorded; the next mode still runs)
            out["runs"][name] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        print(f"  {name}: {json.dumps(out['runs'][name], default=str)}", flush=True)
    bad = [n for n, r in out["runs"].items() if r["status"] != "ok"]
    out["status"] = "ok" if not bad else f"failed: {', '.join(bad)}"
    return out


def _random_llama(path: Path, params: float, hidden: int) -> dict:
    """tools/make_random_checkpoint.py, with SmolLM2's tokenizer taken from the carried copy when
    the packaged GGUF is not there (the GPU machine)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_random_checkpoint as mrc

    carried = CARRY / "a" / "tokenizer"
    if (carried / "tokenizer.json").is_file():
        def copy_tokenizer(out: Path) -> dict:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(carried)
            tok.save_pretrained(out)
            return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        mrc.copy_tokenizer = copy_tokenizer
    t = time.perf_counter()
    mrc.main(["--params", str(params), "--out", str(path), "--hidden-size", str(hidden)])
    return {"seconds": round(time.perf_counter() - t, 1), "config": json.loads((path / "config.json").read_text())}


def step_stream(args) -> dict:
    import torch
    from prunekit.methods import WandaConfig
    from prunekit.streaming.driver import stream_prune

    p = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="prunekit-gpu-stream-"))
    try:
        made = _random_llama(work / "model", p["params"], p["hidden"])
        cfg = made["config"]
        ids = torch.randint(3, cfg["vocab_size"], (p["stream_nsamples"], p["stream_seqlen"]),
                            generator=torch.Generator().manual_seed(0))
        stamps = [time.perf_counter()]
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        res = stream_prune(str(work / "model"), WandaConfig(sparsity=0.5), ids, work / "out", device=args.device,
                           progress=False, on_unit=lambda k: stamps.append(time.perf_counter()))
        per_block = [b - a for a, b in zip(stamps, stamps[1:])][:cfg["num_hidden_layers"]]
        per_block.sort()
        out = {"params_target": p["params"], "layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"],
               "dtype": cfg.get("dtype") or cfg.get("torch_dtype"), "make_s": made["seconds"],
               "calibration": {"nsamples": p["stream_nsamples"], "seqlen": p["stream_seqlen"], "tokens": "random"},
               "prune_s": round(res.seconds, 2), "sparsity": (res.sparsity or {}).get("overall"),
               "block_s_median": round(per_block[len(per_block) // 2], 3) if per_block else None,
               "block_s_max": round(per_block[-1], 3) if per_block else None, "status": "ok"}
        if args.device.startswith("cuda"):
            out["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step_not_carried(name: str):
    why = {"llmcompressor": "llmcompressor 0.14.0.1 (0.4 MB) needs datasets -> pyarrow and pandas (binary wheels of "
                            "about 50 MB for one Python version) plus auto-round and compressed-tensors 0.19: with "
                            "the SmolLM2 GGUF (94 MiB, carried in two calls) they do not fit the 64 MiB a call carries",
           "zeroshot": "lm-eval 0.4.13 (8.7 MB) needs datasets -> pyarrow, pandas, scikit-learn, evaluate, sacrebleu, "
                       "rouge-score: the same size problem; zero-shot accuracy stays a CPU measurement"}[name]
    return lambda args: {"status": "not carried", "why": why}


RESULTS: Results | None = None
RUNNERS = {"cuda_tests": step_cuda_tests, "stream_1p5b": step_stream, "smollm2": step_smollm2,
           "recover_kd": step_recover_kd,
           "llmcompressor": step_not_carried("llmcompressor"), "zeroshot": step_not_carried("zeroshot")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="prunekit's prepared GPU check")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: the whole script on a CPU in minutes")
    ap.add_argument("--dry-run", action="store_true", help="print each step with its estimated seconds; run nothing")
    ap.add_argument("--steps", default=",".join(RUNNERS), help="comma-separated subset of the steps")
    ap.add_argument("--only", default=None, help="smollm2: comma-separated subset of the methods")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock budget: a step whose estimate no longer fits is skipped (default 440, as one "
                         "device call is at most 480 s; none with --quick, which is for checking the script)")
    ap.add_argument("--step-timeout", type=float, default=240.0)
    ap.add_argument("--out", default=None, help="results JSON (default $OUT/gpu_results.json, else benchmarks/gpu/results/)")
    args = ap.parse_args(argv)
    args.only = set(args.only.split(",")) if args.only else None
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in RUNNERS]
    if unknown:
        ap.error(f"unknown step {unknown[0]}: choose from {', '.join(RUNNERS)}")
    col = 1 if args.quick else 0
    if args.budget_s is None:
        args.budget_s = float("inf") if args.quick else 440.0
    if args.dry_run:
        total = ESTIMATES["setup"][col]
        print(f"{'setup':<14}{ESTIMATES['setup'][col]:>6} s  install carried wheels (--no-index), assemble the GGUF")
        for s in steps:
            print(f"{s:<14}{ESTIMATES[s][col]:>6} s  {DESCRIPTIONS[s]}")
            total += ESTIMATES[s][col]
        print(f"{'total':<14}{total:>6} s  ({'--quick on a CPU' if args.quick else 'one H100/H200'}; budget {args.budget_s:.0f} s)")
        return 0
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "gpu_results.json" if os.environ.get("OUT")
                                             else HERE / "results" / f"gpu_results-{args.device.replace(':', '')}"
                                                                     f"{'-quick' if args.quick else ''}.json")
    global RESULTS
    results = RESULTS = Results(out, args)
    start = time.perf_counter()
    for s in steps:
        left = args.budget_s - (time.perf_counter() - start)
        if ESTIMATES[s][col] > left:
            results.step(s, {"status": "skipped", "why": f"estimate {ESTIMATES[s][col]} s > {left:.0f} s left"})
            continue
        print(f"== {s}", flush=True)
        t = time.perf_counter()
        try:
            value = RUNNERS[s](args)
        except Exception as e:   # noqa: BLE001 (recorded; the next step still runs)
            value = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        value.setdefault("wall_s", round(time.perf_counter() - t, 1))
        results.step(s, value)
        print(f"   {s}: {value.get('status', 'ok')} in {value['wall_s']} s", flush=True)
    results.data["wall_s"] = round(time.perf_counter() - start, 1)
    results.save()
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
