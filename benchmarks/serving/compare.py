"""Compare serving engines with transformers on one Hugging Face model folder.

    /work/main/.venv/bin/python benchmarks/serving/compare.py MODEL_DIR \
        [--engines vllm,llamacpp] [--max-tokens 16] [--out results/NAME.json]

* transformers runs here, in the current interpreter (float32, eager
  attention, greedy, EOS ignored): prompt ids, first-token logits, greedy ids.
* vllm_run.py and llamacpp_run.py run in their own venvs
  (``.venvs/vllm``, ``.venvs/llamacpp``, made by setup.sh) through
  subprocess, fed the *same prompt token ids* so tokenizers play no part in
  the comparison.  llama.cpp's full first-token logits are dumped to a .npy
  and compared with transformers' (max abs diff over the whole vocabulary,
  top-1 agreement, top-k overlap).

Exit code 0 even when an engine fails: the JSON says what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
DEFAULT_PROMPT = "The capital of France is"


def hf_reference(model_dir: str, prompt: str, max_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)  # vLLM CPU drops to 1 torch thread here; llama.cpp runs with 1 thread
    tok = AutoTokenizer.from_pretrained(model_dir)
    remote = (Path(model_dir) / "configuration_decilm.py").is_file() or \
        any(Path(model_dir).glob("modeling_prunekit_*.py"))      # prunekit's own layouts ship their code
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=remote,
                                                 attn_implementation="eager").eval()
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    out_ids: list[int] = []
    with torch.no_grad():
        model(x, use_cache=True)  # warm-up
        t = time.perf_counter()
        out = model(x, use_cache=True)
        prefill_s = time.perf_counter() - t
        first = out.logits[0, -1].double()
        past = out.past_key_values
        nxt = int(first.argmax())
        t = time.perf_counter()
        for _ in range(max_tokens):
            out_ids.append(nxt)
            if len(out_ids) == max_tokens:
                break
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
        dec_s = time.perf_counter() - t
    return {
        "engine": "transformers",
        "architectures": list(getattr(model.config, "architectures", None) or []),
        "num_hidden_layers": model.config.num_hidden_layers,
        "prompt_token_ids": ids,
        "token_ids": out_ids,
        "text": tok.decode(out_ids),
        "first_logits": first.numpy(),
        "prefill_s": round(prefill_s, 4),
        "decode_tok_s": round((max_tokens - 1) / max(dec_s, 1e-9), 2),
    }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_engine(script: str, venv: str, model_dir: str, extra: list[str], env: dict, timeout: int) -> dict:
    py = VENVS / venv / "bin" / "python"
    if not py.is_file():
        return {"ok": False, "error": f"{py} missing: run benchmarks/serving/setup.sh"}
    cmd = ["nice", "-n", "19", str(py), str(HERE / script), model_dir, *extra]
    t = time.perf_counter()
    # own session, so any engine helper process left behind can be ended with it
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p.pid)
        p.communicate()
        return {"ok": False, "error": f"timeout after {timeout}s"}
    finally:
        _kill_group(p.pid)
    p.stdout, p.stderr = out, err  # type: ignore[assignment]
    wall = round(time.perf_counter() - t, 1)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
    if res is None:
        lines = (p.stdout + p.stderr).strip().splitlines()
        # the root cause of a worker's failure sits far above the last lines of the log
        causes = [ln for ln in lines if "Error: " in ln and "Traceback" not in ln][:5]
        return {"ok": False, "returncode": p.returncode, "wall_s": wall, "log_tail": lines[-40:], "error_lines": causes}
    res["ok"] = p.returncode == 0
    res["wall_s"] = wall
    if p.returncode != 0:
        res["log_tail"] = (p.stdout + p.stderr).strip().splitlines()[-40:]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--engines", default="vllm,llamacpp")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--outtype", default="f32")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--out", default=None, help="write the JSON report here too")
    ap.add_argument("--engine-dir", default=None,
                    help="folder the engines load (default MODEL_DIR); e.g. a make_deci.py "
                         "probe of the same function while transformers loads the Llama folder")
    args = ap.parse_args()

    import numpy as np

    model_dir = str(Path(args.model_dir).resolve())
    engine_dir = str(Path(args.engine_dir).resolve()) if args.engine_dir else model_dir
    # a folder that ships its own code (prunekit's DeciLM config, or prunekit's own layout) is loaded with it
    remote = ["--trust-remote-code"] if json.loads((Path(engine_dir) / "config.json").read_text()).get("auto_map") else []
    ref = hf_reference(model_dir, args.prompt, args.max_tokens)
    ref_logits = ref.pop("first_logits")
    ref_top = np.argsort(-ref_logits)[:10]
    ref["first_logits_topk"] = {"ids": [int(i) for i in ref_top], "values": [float(ref_logits[i]) for i in ref_top]}
    ids_arg = ",".join(str(i) for i in ref["prompt_token_ids"])
    report: dict = {"model_dir": model_dir, "engine_dir": engine_dir, "prompt": args.prompt, "max_tokens": args.max_tokens,
                    "transformers": ref}

    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.pop("PYTHONPATH", None)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    if "vllm" in engines:
        r = run_engine("vllm_run.py", "vllm", engine_dir,
                       ["--prompt-ids", ids_arg, "--max-tokens", str(args.max_tokens), *remote],
                       env, args.timeout)
        if "token_ids" in r:
            r["same_tokens_as_transformers"] = r["token_ids"] == ref["token_ids"]
        report["vllm"] = r

    if "llamacpp" in engines:
        with tempfile.TemporaryDirectory() as td:
            dump = Path(td) / "logits.npy"
            e2 = dict(env, SERVING_DUMP_LOGITS=str(dump))
            r = run_engine("llamacpp_run.py", "llamacpp", engine_dir,
                           ["--prompt-ids", ids_arg, "--max-tokens", str(args.max_tokens),
                            "--outtype", args.outtype], e2, args.timeout)
            if dump.is_file():
                lc = np.load(dump).astype(np.float64)
                diff = np.abs(lc[: ref_logits.shape[0]] - ref_logits)
                lc_top = np.argsort(-lc)[:10]
                r["first_logits_vs_transformers"] = {
                    "max_abs_diff": float(diff.max()),
                    "mean_abs_diff": float(diff.mean()),
                    "max_abs_diff_top10": float(diff[ref_top].max()),
                    "top1_same": int(lc_top[0]) == int(ref_top[0]),
                    "top10_overlap": len(set(map(int, lc_top)) & set(map(int, ref_top))),
                    "vocab": [int(lc.shape[0]), int(ref_logits.shape[0])],
                }
        if "token_ids" in r:
            r["same_tokens_as_transformers"] = r["token_ids"] == ref["token_ids"]
        report["llamacpp"] = r

    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
