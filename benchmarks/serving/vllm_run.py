"""Load a Hugging Face model folder in vLLM (CPU build) and greedy-decode a prompt.

Run with the vLLM venv made by setup.sh:

    VLLM_CPU_KVCACHE_SPACE=1 benchmarks/serving/.venvs/vllm/bin/python \
        benchmarks/serving/vllm_run.py MODEL_DIR [--prompt TEXT] [--max-tokens N]

Prints one JSON object on the last stdout line (prefixed with ``RESULT ``):

* ``token_ids``: generated ids (greedy, temperature 0, EOS ignored so the
  length is always ``--max-tokens``)
* ``model_class``: the ``nn.Module`` class vLLM instantiated for the
  checkpoint, read from the live model on the worker
  (``LLM.collective_rpc`` -> ``worker.model_runner.model``); ``model_class_module``
  tells whether it came from ``vllm.model_executor.models.<arch>`` (native)
  or from ``...models.transformers`` (the Transformers fallback).
  ``model_config.architecture`` is the architecture name the engine resolved
  from the config's ``architectures`` (the same value vLLM logs as
  "Resolved architecture: ..."); with the Transformers fallback it reads
  ``Transformers...ForCausalLM``.
* ``prefill_s``: wall time of a ``generate`` call with ``max_tokens=1``
  (prompt processing + first token), median of ``--repeats``.
* ``decode_tok_s``: (max_tokens - 1) / (t_full - prefill_s) where ``t_full``
  is the median wall time of the full greedy ``generate``: the steady
  decode rate with the prefill subtracted.

The vLLM calls sit under ``if __name__ == "__main__":`` because vLLM's CPU
engine starts worker processes with ``spawn``, which re-imports this module.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

DEFAULT_PROMPT = "The capital of France is"


def _model_class_on_worker(worker) -> tuple[str, str]:  # runs inside the worker
    runner = getattr(worker, "model_runner", worker)
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    cls = type(model)
    return cls.__name__, cls.__module__


def _registry_view(llm) -> dict:
    """What the engine's ModelConfig says about the architecture (no live model)."""
    out: dict = {}
    try:
        mc = llm.llm_engine.model_config
    except Exception:  # pragma: no cover - engine layout differs across versions
        return out
    out["hf_architectures"] = list(getattr(mc.hf_config, "architectures", None) or [])
    for attr in ("architecture", "architectures", "model_impl"):
        val = getattr(mc, attr, None)
        if val is not None:
            out[f"model_config.{attr}"] = val if isinstance(val, (str, list)) else str(val)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--prompt-ids", default=None,
                    help="comma-separated token ids to use instead of --prompt "
                         "(so every engine sees the same tokens)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="needed for folders whose config class ships with the checkpoint "
                         "(DeciLM / nemotron-nas, see make_deci.py)")
    args = ap.parse_args()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # collective_rpc ships a plain function to the worker; vLLM's msgpack
    # serializer only accepts that with the pickle fallback switched on.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from vllm import LLM, SamplingParams  # noqa: E402  (import after env is set)

    t0 = time.perf_counter()
    llm = LLM(
        model=args.model_dir,
        dtype="float32",
        max_model_len=args.max_model_len,
        enforce_eager=True,
        seed=0,
        trust_remote_code=args.trust_remote_code,
    )
    load_s = time.perf_counter() - t0

    if args.prompt_ids:
        prompt = {"prompt_token_ids": [int(x) for x in args.prompt_ids.split(",")]}
    else:
        prompt = args.prompt

    greedy = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    one = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)

    llm.generate([prompt], one, use_tqdm=False)  # warm-up
    pre, full, out = [], [], None
    for _ in range(max(1, args.repeats)):
        t = time.perf_counter()
        llm.generate([prompt], one, use_tqdm=False)
        pre.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = llm.generate([prompt], greedy, use_tqdm=False)
        full.append(time.perf_counter() - t)
    prefill_s = statistics.median(pre)
    full_s = statistics.median(full)
    comp = out[0].outputs[0]

    try:
        name, module = llm.collective_rpc(_model_class_on_worker)[0]
    except Exception as e:  # pragma: no cover
        name, module = None, f"unavailable: {type(e).__name__}: {e}"

    result = {
        "engine": "vllm",
        "vllm_version": __import__("vllm").__version__,
        "model_dir": args.model_dir,
        "prompt_token_ids": list(out[0].prompt_token_ids),
        "token_ids": list(comp.token_ids),
        "text": comp.text,
        "model_class": name,
        "model_class_module": module,
        "native": bool(module) and ".transformers" not in module and name is not None
        and not name.startswith("Transformers"),
        **_registry_view(llm),
        "load_s": round(load_s, 3),
        "prefill_s": round(prefill_s, 4),
        "decode_tok_s": round((args.max_tokens - 1) / max(full_s - prefill_s, 1e-9), 2)
        if args.max_tokens > 1 else None,
        "full_generate_s": round(full_s, 4),
        "kv_cache_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
        "timing": "median of --repeats; prefill = generate(max_tokens=1); "
                  "decode tok/s = (N-1)/(t(generate N) - prefill)",
    }
    print("RESULT " + json.dumps(result), flush=True)
    # Stop the engine-core process (and its worker) before exiting; left
    # running they keep several GB and this process's stdout pipe open.
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as e:  # pragma: no cover
        print(f"engine shutdown: {type(e).__name__}: {e}", file=sys.stderr)
    del llm


if __name__ == "__main__":
    main()
