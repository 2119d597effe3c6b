"""Real speed and memory of a model: prefill latency (batch 1 x seqlen, logits of the last
position only, as generate() computes them), decode tokens per second and peak memory.

Each model is measured in a fresh spawned process, so that its peak memory is its own and not
the maximum of everything measured before it. Times are medians of `reps` repetitions after
`warmup` unmeasured ones."""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from pathlib import Path

import torch


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def disk_bytes(source) -> int | None:
    """Weight (and modeling code) bytes of the checkpoint folder a model was loaded from; for a
    GGUF, of the float32 checkpoint prunekit dequantised it into."""
    from ..models.loading import _gguf_cache_path
    p = _gguf_cache_path(source.gguf) if source.gguf else Path(source.path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".py"))
    return None


def _measure(spec, dtype, device, settings, trust_remote_code, threads):
    import resource
    from transformers.utils import logging as hf_logging
    from ..models.loading import load_model
    from ..stats import param_counts

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    model, _, source = load_model(spec, dtype, trust_remote_code)
    model.to(device).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, vocab, (1, settings["seqlen"]), generator=g).to(device)
    prompt = torch.randint(0, vocab, (settings["batch"], settings["prompt_len"]), generator=g).to(device)
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reps, warmup = settings["reps"], settings["warmup"]
    with torch.inference_mode():
        prefill, prefill_all = _timed(lambda: model(seq, use_cache=True, logits_to_keep=1), device, reps, warmup)

        def gen(n):
            return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                          max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        t_full, _ = _timed(gen(settings["new_tokens"]), device, reps, warmup)
        t_one, _ = _timed(gen(1), device, reps, warmup)
    decode_tps = settings["batch"] * (settings["new_tokens"] - 1) / max(t_full - t_one, 1e-9)
    out = {"model": spec, "source": source.spec, "layers": model.config.num_hidden_layers,
           **param_counts(model), "disk_bytes": disk_bytes(source),
           "prefill_s": prefill, "prefill_all_s": prefill_all, "decode_tokens_per_s": decode_tps,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
    if str(device).startswith("cuda"):
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return out


def _child(queue, *args):
    try:
        queue.put(("ok", _measure(*args)))
    except BaseException as e:  # report, do not hang the parent
        queue.put(("error", f"{type(e).__name__}: {e}"))


def measure(spec: str, dtype: str = "float32", device: str = "cpu", seqlen: int = 512, prompt_len: int = 128,
            new_tokens: int = 64, batch: int = 1, reps: int = 5, warmup: int = 1,
            trust_remote_code: bool = False) -> dict:
    """Speed and memory of one model, measured in a fresh process."""
    from ..errors import PrunekitError

    settings = {"seqlen": seqlen, "prompt_len": prompt_len, "new_tokens": new_tokens, "batch": batch,
                "reps": reps, "warmup": warmup, "dtype": dtype, "threads": torch.get_num_threads()}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, spec, dtype, device, settings, trust_remote_code,
                                            torch.get_num_threads()))
    proc.start()
    status, value = queue.get()
    proc.join()
    if status != "ok":
        raise PrunekitError(f"measuring {spec} failed: {value}")
    return {**value, "settings": settings, "device": device}


def ratios(pruned: dict, dense: dict) -> dict:
    r = {"params": pruned["params_total"] / dense["params_total"],
         "layers": pruned["layers"] / dense["layers"],
         "prefill_latency": pruned["prefill_s"] / dense["prefill_s"],
         "decode_tokens_per_s": pruned["decode_tokens_per_s"] / dense["decode_tokens_per_s"],
         "peak_rss": pruned["peak_rss_gb"] / dense["peak_rss_gb"]}
    if pruned.get("disk_bytes") and dense.get("disk_bytes"):
        r["disk"] = pruned["disk_bytes"] / dense["disk_bytes"]
    if "peak_gpu_gb" in pruned and "peak_gpu_gb" in dense:
        r["peak_gpu"] = pruned["peak_gpu_gb"] / dense["peak_gpu_gb"]
    return r
