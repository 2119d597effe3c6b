"""Prefill latency and decode speed of several GGUF files in llama.cpp, measured interleaved in one
process (round after round, every model once per round), so a slower moment of a shared machine
falls on all of them alike.

    benchmarks/serving/.venvs/llamacpp/bin/python benchmarks/serving/llamacpp_speed.py \
        --prompt-ids 1,2,3,... --new-tokens 64 --rounds 5 NAME=FILE.gguf ...

Prefill: wall time of `Llama.eval(prompt)` after a reset. Decode: tokens/s of the greedy tokens
after the first, (N-1) / (t(generate N) - prefill). Per model the median over rounds; the first
round is a warm-up and not counted. Prints one JSON object prefixed with ``RESULT ``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def measure(llm, ids: list[int], new_tokens: int) -> tuple[float, float]:
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t
    llm.reset()
    n = 0
    t = time.perf_counter()
    for _ in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        n += 1
        if n >= new_tokens:
            break
    total = time.perf_counter() - t
    return prefill, (n - 1) / max(total - prefill, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH.gguf")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LLAMA_THREADS", "1")))
    args = ap.parse_args()
    import llama_cpp

    ids = [int(x) for x in args.prompt_ids.split(",")]
    llms = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        llms[name] = llama_cpp.Llama(model_path=path, n_ctx=len(ids) + args.new_tokens + 8, n_batch=512,
                                     n_threads=args.threads, n_threads_batch=args.threads, seed=0, verbose=False)
    times = {name: {"prefill_s": [], "decode_tok_s": []} for name in llms}
    for r in range(args.rounds + 1):
        for name, llm in llms.items():
            prefill, decode = measure(llm, ids, args.new_tokens)
            if r:
                times[name]["prefill_s"].append(prefill)
                times[name]["decode_tok_s"].append(decode)
    result = {name: {"prefill_s": statistics.median(t["prefill_s"]), "decode_tok_s": statistics.median(t["decode_tok_s"]),
                     "rounds": t} for name, t in times.items()}
    result["_protocol"] = {"prompt_tokens": len(ids), "new_tokens": args.new_tokens, "rounds": args.rounds,
                           "threads": args.threads, "llama_cpp_python": llama_cpp.__version__,
                           "timing": "median over rounds after one warm-up round; models interleaved in each round"}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
