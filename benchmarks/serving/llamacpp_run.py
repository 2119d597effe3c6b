"""Convert a Hugging Face model folder to GGUF and run it with llama.cpp.

Run with the llama.cpp venv made by setup.sh:

    benchmarks/serving/.venvs/llamacpp/bin/python benchmarks/serving/llamacpp_run.py \
        MODEL_DIR [--outtype f32|f16] [--prompt TEXT | --prompt-ids 1,2,3] [--max-tokens N]

Steps:

1. ``convert_hf_to_gguf.py`` from the unpacked llama-cpp-python sdist
   (``.venvs/llama-src/vendor/llama.cpp``, the llama.cpp revision the
   bindings were built from) writes ``<gguf-dir>/<name>-<outtype>.gguf``.
   The converter's log tail is kept in the JSON (``convert_log_tail``).
2. ``llama_cpp.Llama(model_path, logits_all=True)`` evaluates the prompt once;
   the logits of the last prompt position (the distribution of the first
   generated token) are reported as top-k ids/values.
3. Greedy decode (``top_k=1``, temperature 0) of ``--max-tokens`` tokens.

Speed: ``prefill_s`` is the wall time of ``Llama.eval(prompt)`` after a reset
(median of ``--repeats``); ``decode_tok_s`` is ``(N-1) / (t_generate_N -
prefill_s)``, with ``t_generate_N`` the wall time of a fresh greedy
generation of N tokens (prompt included).

Prints one JSON object on the last stdout line prefixed with ``RESULT ``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LLAMA_SRC = Path(os.environ.get("LLAMA_SRC", HERE / ".venvs" / "llama-src" / "vendor" / "llama.cpp"))
CONVERTER = LLAMA_SRC / "convert_hf_to_gguf.py"
DEFAULT_PROMPT = "The capital of France is"


def _run_converter(cmd: list[str], out: Path) -> dict:
    env = dict(os.environ)
    # the converter imports its sibling ``conversion`` package and ``gguf`` (gguf-py)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(LLAMA_SRC), str(LLAMA_SRC / "gguf-py"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = [ln for ln in (p.stdout + p.stderr).strip().splitlines() if "Writing:" not in ln]
    return {
        "ok": p.returncode == 0 and out.is_file(),
        "returncode": p.returncode,
        "seconds": round(time.perf_counter() - t, 2),
        "hf_arch": next((ln.split(":")[-1].strip() for ln in log if "Model architecture" in ln), None),
        "warnings": [ln for ln in log if ln.startswith("WARNING")][:10],
        "log_tail": log[-12:],
    }


def convert(model_dir: Path, out: Path, outtype: str, fallback: bool) -> dict:
    """Plain vendored converter first; on the DeciLM vocabulary failure, rerun it
    through gguf_convert.py (GPT-2 BPE vocabulary path) and say so."""
    args = [str(model_dir), "--outfile", str(out), "--outtype", outtype]
    res = _run_converter([sys.executable, str(CONVERTER), *args], out)
    res["vocab_fallback"] = False
    if not res["ok"] and fallback and any("Cannot find Llama BPE tokenizer" in ln for ln in res["log_tail"]):
        first_error = res["log_tail"][-1]
        res = _run_converter([sys.executable, str(HERE / "gguf_convert.py"), str(LLAMA_SRC), *args], out)
        res["vocab_fallback"] = True
        res["plain_converter_error"] = first_error
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--gguf-dir", default=None, help="where to write the GGUF (default: MODEL_DIR/../gguf)")
    ap.add_argument("--reuse", action="store_true", help="skip conversion if the GGUF exists")
    ap.add_argument("--no-vocab-fallback", action="store_true",
                    help="report the DeciLM vocabulary failure instead of retrying via gguf_convert.py")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--prompt-ids", default=None, help="comma-separated token ids (skip llama.cpp's tokenizer)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LLAMA_THREADS", "1")))
    args = ap.parse_args()

    model_dir = Path(args.model_dir).resolve()
    gguf_dir = Path(args.gguf_dir) if args.gguf_dir else model_dir.parent / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    gguf_path = gguf_dir / f"{model_dir.name}-{args.outtype}.gguf"

    result: dict = {"engine": "llama.cpp", "model_dir": str(model_dir), "gguf": str(gguf_path),
                    "outtype": args.outtype}
    if args.reuse and gguf_path.is_file():
        conv = {"ok": True, "reused": True}
    else:
        conv = convert(model_dir, gguf_path, args.outtype, not args.no_vocab_fallback)
    result["convert"] = conv
    if not conv["ok"]:
        print("RESULT " + json.dumps(result), flush=True)
        sys.exit(1)

    import numpy as np
    import llama_cpp

    result["llama_cpp_python_version"] = llama_cpp.__version__
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(gguf_path), logits_all=True, n_ctx=512, n_batch=512,
                          n_threads=args.threads, n_threads_batch=args.threads, seed=0, verbose=False)
    result["load_s"] = round(time.perf_counter() - t, 3)
    try:
        result["gguf_arch"] = llm.metadata.get("general.architecture")
        result["gguf_tokenizer"] = {k: llm.metadata.get(k) for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre")}
    except Exception:  # pragma: no cover
        pass

    if args.prompt_ids:
        ids = [int(x) for x in args.prompt_ids.split(",")]
    else:
        ids = llm.tokenize(args.prompt.encode(), add_bos=False, special=True)
    result["prompt_token_ids"] = ids

    pre = []
    logits = None
    for _ in range(max(1, args.repeats) + 1):  # first pass is a warm-up
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        pre.append(time.perf_counter() - t)
        logits = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
    prefill_s = statistics.median(pre[1:])
    top = np.argsort(-logits)[: args.top_k]
    result["first_logits_topk"] = {"ids": [int(i) for i in top], "values": [float(logits[i]) for i in top]}
    result["first_logits_path"] = None
    if os.environ.get("SERVING_DUMP_LOGITS"):
        path = Path(os.environ["SERVING_DUMP_LOGITS"])
        np.save(path, logits.astype(np.float32))
        result["first_logits_path"] = str(path)

    gens = []
    tokens: list[int] = []
    for _ in range(max(1, args.repeats)):
        llm.reset()
        tokens = []
        t = time.perf_counter()
        for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            tokens.append(int(tok))
            if len(tokens) >= args.max_tokens:
                break
        gens.append(time.perf_counter() - t)
    gen_s = statistics.median(gens)
    result.update({
        "token_ids": tokens,
        "text": llm.detokenize(tokens).decode("utf-8", "replace"),
        "prefill_s": round(prefill_s, 4),
        "decode_tok_s": round((len(tokens) - 1) / max(gen_s - prefill_s, 1e-9), 2) if len(tokens) > 1 else None,
        "threads": args.threads,
        "timing": "median of --repeats; prefill = Llama.eval(prompt) after reset; "
                  "decode tok/s = (N-1)/(t(generate N) - prefill)",
    })
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
