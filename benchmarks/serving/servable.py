"""Benchmark: which pruned SmolLM2 outputs real serving engines run natively, how close they stay to
transformers, and how fast they are against dense, next to their quality.

    cd benchmarks && PRUNEKIT_DATA_DIR=../../shared/data python serving/servable.py --reuse [--phase all]

Phases (each keeps its results in results/servable_outputs.json):
1. prune: every model below through `prunekit prune` (WikiText-2 test wt2-2048/16 as the depth and
   width benchmarks evaluate) and `prunekit eval --eval kl` (KL to dense on WikiText-2 test, 16 x 512).
2. engines: serving/compare.py per model: transformers (float32, eager) against vLLM's CPU build
   (greedy tokens, the class vLLM built) and llama.cpp (the vendored converter, an f32 GGUF, the
   first-token logits over the whole vocabulary, greedy tokens), 16 tokens from one prompt.
3. speed: prefill latency of a 128-token WikiText-2 prompt and decode tokens/s over 64 new tokens,
   in each engine, every model interleaved with dense (llama.cpp: one process, 5 rounds after a
   warm-up; vLLM: one process per model and round, 2 rounds, 3 repeats each).
The serving engines live in their own virtual environments (serving/setup.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import runner  # noqa: E402

from compare import VENVS, run_engine  # noqa: E402

NAME = "servable_outputs"
DEPTH_CAL = ["--calib", "c4", "--nsamples", "10", "--seqlen", "128", "--seed", "0"]
WIDTH_CAL = ["--calib", "c4", "--nsamples", "32", "--seqlen", "512", "--seed", "0", "--generations", "4",
             "--width-multiple", "256"]
MODELS = {
    "shortgpt-6": ["--method", "shortgpt", "--remove-layers", "6", *DEPTH_CAL],
    "shortgpt-sublayer-0.8": ["--method", "shortgpt", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "sleb-sublayer-0.8": ["--method", "sleb", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "ppl-sublayer-0.8": ["--method", "ppl", "--unit", "sublayer", "--keep", "0.8", *DEPTH_CAL],
    "width-mlp-0.85": ["--method", "search-llm", "--attention", "keep", "--keep", "0.85", *WIDTH_CAL],
    "width-mlp-0.7": ["--method", "search-llm", "--attention", "keep", "--keep", "0.7", *WIDTH_CAL],
    "width-kv-0.85": ["--method", "search-llm", "--attention", "kv-groups", "--keep", "0.85", *WIDTH_CAL],
    "width-kv-0.7": ["--method", "search-llm", "--attention", "kv-groups", "--keep", "0.7", *WIDTH_CAL],
    # the paper's within-head widths: prunekit's own layout, which the engines must refuse cleanly
    "width-within-heads-0.8": ["--method", "search-llm", "--keep", "0.8", "--calib", "c4", "--nsamples", "32",
                               "--seqlen", "512", "--seed", "0", "--generations", "4"],
    # the KV fit alone: the importance initialisation, no reformation, mean against weighted
    "kvfit-mean-init-0.85": ["--method", "search-llm", "--attention", "kv-groups", "--kv-fit", "mean",
                             "--keep", "0.85", *WIDTH_CAL[:-4], "--generations", "0", "--reform", "none",
                             "--width-multiple", "256"],
    "kvfit-weighted-init-0.85": ["--method", "search-llm", "--attention", "kv-groups", "--kv-fit", "weighted",
                                 "--keep", "0.85", *WIDTH_CAL[:-4], "--generations", "0", "--reform", "none",
                                 "--width-multiple", "256"],
}
ENGINE_MODELS = ["dense", "shortgpt-6", "shortgpt-sublayer-0.8", "sleb-sublayer-0.8", "ppl-sublayer-0.8",
                 "width-mlp-0.85", "width-mlp-0.7", "width-kv-0.85", "width-kv-0.7", "width-within-heads-0.8",
                 "qwen2-decilm-probe"]


def load_results() -> dict:
    path = runner.HERE / "results" / f"{NAME}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(results: dict) -> None:
    runner.save_results(NAME, results)


def dense_folder(work: Path, model: str) -> Path:
    """The dense model saved as a plain float32 Hugging Face folder (what the engines load)."""
    out = work / "dense-hf"
    if not (out / "config.json").exists():
        code = ("import sys, prunekit; m, tok, _ = prunekit.load_model(sys.argv[1], 'float32'); "
                "m.save_pretrained(sys.argv[2]); tok.save_pretrained(sys.argv[2])")
        runner.run([sys.executable, "-c", code, model, str(out)])
    return out


def prune_phase(work: Path, args, results: dict) -> None:
    dense = runner.dense(work, args.model, args.eval_windows)
    results.setdefault("dense", {})["quality"] = quality(dense)
    for tag, flags in MODELS.items():
        rep = runner.prune(work, tag, args.model, args.eval_windows, [*flags, "--trust-remote-code"], reuse=args.reuse)
        if "kl" not in rep:     # eval --save-to-model keeps KL as the report's "kl" section
            runner.run(runner.PRUNEKIT + ["eval", "--model", str(work / tag), "--eval", "kl", "--dense", args.model,
                                          "--trust-remote-code", "--save-to-model"])
            rep = json.loads((work / tag / "prunekit_report.json").read_text())
        results.setdefault(tag, {})["quality"] = quality(rep)
        save(results)


def quality(rep: dict) -> dict:
    ev = rep.get("eval") or {}
    meth = rep.get("method") or {}
    out = {"params": rep["model"]["params_total"], "wt2": (ev.get("wikitext2") or {}).get("ppl"),
           "kl": (rep.get("kl") or {}).get("kl"), "serving": rep["model"].get("serving"),
           "architecture": rep["model"].get("architecture"), "prune_s": (rep.get("timing") or {}).get("prune_s")}
    depth = meth.get("depth") or {}
    if "kept_params" in depth:
        out["kept_block_params"] = depth["kept_params"] / depth["block_params"]
    elif "kept_fraction" in meth:
        out["kept_block_params"] = meth["kept_fraction"]
    if meth.get("widths"):
        out["widths"] = meth["widths"]
    if depth.get("sublayers_removed"):
        out["sublayers_removed"] = depth["sublayers_removed"]
    return out


def folder(work: Path, tag: str, model: str) -> Path:
    if tag == "dense":
        return dense_folder(work, model)
    if tag == "qwen2-decilm-probe" and not (work / tag / "config.json").exists():
        runner.run([sys.executable, str(HERE / "make_probe.py"), str(dense_folder(work, model)), str(work / tag)])
    return work / tag


def engines_phase(work: Path, args, results: dict) -> None:
    out_dir = runner.HERE / "results" / "serving"
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag in [t for t in ENGINE_MODELS if not args.models or t in args.models.split(",")]:
        path = out_dir / f"{NAME}-{tag}.json"
        if not (args.reuse and path.exists()):
            runner.run([sys.executable, str(HERE / "compare.py"), str(folder(work, tag, args.model)),
                        "--out", str(path)])
        results.setdefault(tag, {})["engines"] = summarise(json.loads(path.read_text()))
        control = work / tag / "bias_control.json"
        if control.exists():
            results[tag]["engines"]["bias_control"] = json.loads(control.read_text())
        padded = padded_for_llamacpp(work, tag, args, out_dir)
        if padded is not None:
            results[tag]["engines"]["llamacpp_export"] = padded
        save(results)


def padded_for_llamacpp(work: Path, tag: str, args, out_dir: Path, name: str = NAME) -> dict | None:
    """Where the output's own summary says llama.cpp cannot run it: `prunekit export --for
    llama.cpp`, then llama.cpp on that copy against transformers on the output itself."""
    src = folder(work, tag, args.model)
    config = json.loads((src / "config.json").read_text())
    from prunekit.models.serving import llamacpp_obstacles
    if config.get("model_type") != "nemotron-nas" or not llamacpp_obstacles(config):
        return None
    dst = work / f"{tag}-llamacpp"
    if not (dst / "config.json").exists():
        runner.run(runner.PRUNEKIT + ["export", "--model", str(src), "--for", "llama.cpp", "--output", str(dst),
                                      "--trust-remote-code", "--overwrite"])
    path = out_dir / f"{name}-{tag}-llamacpp-export.json"
    if not (args.reuse and path.exists()):
        runner.run([sys.executable, str(HERE / "compare.py"), str(src), "--engine-dir", str(dst),
                    "--engines", "llamacpp", "--out", str(path)])
    out = summarise(json.loads(path.read_text()))["llamacpp"]
    report = json.loads((dst / "prunekit_report.json").read_text())["export"]
    out.update(changes=report["changes"], params_added=report["params_added"])
    return out


def _first_error(lines: list[str]) -> str:
    """The line of a failed engine's log that says why: an exception or 'not supported'."""
    for key in ("ValueError", "not supported", "Error:", "rror"):
        hit = next((ln for ln in lines if key in ln), None)
        if hit:
            return hit.strip()[:400]
    return "failed"


def summarise(rep: dict) -> dict:
    v, lc = rep.get("vllm", {}), rep.get("llamacpp", {})
    diff = lc.get("first_logits_vs_transformers") or {}
    # a failed conversion says why in the converter's log, anything else in the engine's
    err = lambda r: None if r.get("token_ids") else (r.get("error") or _first_error(
        ((r.get("convert") or {}).get("log_tail") if not (r.get("convert") or {}).get("ok", True) else None)
        or r.get("error_lines") or r.get("log_tail") or []))
    return {"vllm": {"class": v.get("model_class"), "native": v.get("native"),
                     "same_tokens": v.get("same_tokens_as_transformers"), "error": err(v)},
            "llamacpp": {"arch": lc.get("gguf_arch"), "max_abs_logit_diff": diff.get("max_abs_diff"),
                         "top1_same": diff.get("top1_same"), "same_tokens": lc.get("same_tokens_as_transformers"),
                         "vocab_fallback": (lc.get("convert") or {}).get("vocab_fallback"), "error": err(lc),
                         "gguf": lc.get("gguf")}}


def prompt_ids(model: str, n: int) -> list[int]:
    from prunekit import load_model
    from prunekit.data.sources import load_source
    _, tok, _ = load_model(model, "float32")
    text = load_source("wikitext2", "test").text()
    return tok(text[:20000], add_special_tokens=False)["input_ids"][:n]


def llamacpp_speed(ids: list[int], ggufs: dict[str, str], rounds: int = 5) -> tuple[dict, dict]:
    """Prefill and decode of every GGUF, interleaved in one llama.cpp process: ({tag: speed}, protocol)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    py = str(VENVS / "llamacpp" / "bin" / "python")
    cmd = ["nice", "-n", "19", py, str(HERE / "llamacpp_speed.py"), "--prompt-ids", ",".join(map(str, ids)),
           "--new-tokens", "64", "--rounds", str(rounds), *[f"{t}={g}" for t, g in ggufs.items()]]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit("llama.cpp speed run failed:\n" + out.stderr[-2000:])
    lc = json.loads(line[len("RESULT "):])
    protocol = lc.pop("_protocol")
    return {tag: {k: r[k] for k in ("prefill_s", "decode_tok_s")} for tag, r in lc.items()}, protocol


def vllm_speed(ids: list[int], folders: dict[str, Path], rounds: int = 2) -> tuple[dict, dict]:
    """Prefill and decode in vLLM, one process per model and round, models interleaved: ({tag: speed}, protocol)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    runs = {t: [] for t in folders}
    for _ in range(rounds):
        for tag, path in folders.items():
            remote = ["--trust-remote-code"] if (path / "configuration_decilm.py").is_file() else []
            r = run_engine("vllm_run.py", "vllm", str(path), ["--prompt-ids", ",".join(map(str, ids)),
                                                              "--max-tokens", "64", "--repeats", "3", *remote], env, 1800)
            runs[tag].append({k: r.get(k) for k in ("prefill_s", "decode_tok_s")})
    out = {}
    for tag, rs in runs.items():
        out[tag] = {k: statistics.median(r[k] for r in rs if r[k] is not None) for k in ("prefill_s", "decode_tok_s")}
        out[tag]["runs"] = rs
    return out, {"prompt_tokens": len(ids), "new_tokens": 64, "rounds": rounds, "repeats": 3,
                 "timing": "median of the rounds' medians; one process per model and round, models interleaved"}


def servable_gguf(engines: dict) -> str | None:
    """The GGUF that reproduces transformers: the output's, or its llama.cpp export's."""
    for run in (engines.get("llamacpp_export"), engines.get("llamacpp")):
        if run and run.get("same_tokens") and not run.get("error"):
            return run["gguf"]
    return None


def speed_phase(work: Path, args, results: dict) -> None:
    ids = prompt_ids(args.model, 128)
    ggufs = {t: g for t in ENGINE_MODELS if t != "qwen2-decilm-probe"
             and (g := servable_gguf((results.get(t) or {}).get("engines") or {}))}
    lc, protocol = llamacpp_speed(ids, ggufs)
    results["_speed_protocol"] = {"llamacpp": protocol}
    for tag, r in lc.items():
        results[tag].setdefault("speed", {})["llamacpp"] = r
    save(results)
    vllm_ok = [t for t in ENGINE_MODELS if t != "qwen2-decilm-probe" and (results.get(t, {}).get("engines") or {}).get("vllm", {}).get("native")]
    vl, protocol = vllm_speed(ids, {t: folder(work, t, args.model) for t in vllm_ok})
    for tag, r in vl.items():
        results[tag].setdefault("speed", {})["vllm"] = r
    results["_speed_protocol"]["vllm"] = protocol
    save(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.common_args(ap, nsamples=10, seqlen=128, eval_windows=16)
    ap.add_argument("--phase", choices=("all", "prune", "engines", "speed"), default="all")
    ap.add_argument("--models", default=None, help="engines phase: only these (comma-separated tags)")
    args = ap.parse_args()
    work = Path(args.work)
    results = load_results()
    if args.phase in ("all", "prune"):
        prune_phase(work, args, results)
    if args.phase in ("all", "engines"):
        engines_phase(work, args, results)
    if args.phase in ("all", "speed"):
        speed_phase(work, args, results)


if __name__ == "__main__":
    main()
