"""Real speed and memory of models: prefill latency (batch 1 x seqlen, logits of the last
position only, as generate() computes them), decode tokens per second and peak memory.

Each model lives in its own spawned worker process, so that its peak memory is its own. The
workers are timed in interleaved rounds (one repetition of every model, then the next round):
a slow spell of a shared machine then falls on all models alike instead of on whichever model
happened to run during it, which is what makes the ratios trustworthy on a busy CPU. Times are
medians of `reps` rounds after `warmup` unmeasured ones. Ratios of models measured together
are medians of the per-round ratios (each round's pair ran back to back), which discounts a
slow spell that hits one round."""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
import uuid
from pathlib import Path

import torch


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def disk_bytes(source) -> int | None:
    """Weight (and modeling code) bytes of the checkpoint folder a model was loaded from; for a
    GGUF, of the float32 checkpoint prunekit dequantised it into."""
    from ..models.loading import _gguf_cache_path
    p = _gguf_cache_path(source.gguf) if source.gguf else Path(source.path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".py"))
    return None


def _worker(conn, spec, settings, device, trust_remote_code):
    """Load one model, then answer timing requests until told to stop."""
    import resource
    try:
        from transformers.utils import logging as hf_logging
        from ..models.loading import load_model
        from ..stats import param_counts

        hf_logging.disable_progress_bar()
        torch.set_num_threads(settings["threads"])
        model, _, source = load_model(spec, settings["dtype"], trust_remote_code)
        model.to(device).eval()
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        seq = torch.randint(0, vocab, (1, settings["seqlen"]), generator=g).to(device)
        prompt = torch.randint(0, vocab, (settings["batch"], settings["prompt_len"]), generator=g).to(device)
        if str(device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

        def gen(n):
            # use_cache=True explicitly: a checkpoint whose config disables the cache would
            # otherwise re-run the whole sequence at every step
            model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                           max_new_tokens=n, min_new_tokens=n, pad_token_id=0)

        jobs = {"prefill": lambda: model(seq, use_cache=True, logits_to_keep=1),
                "generate": lambda: gen(settings["new_tokens"]), "generate1": lambda: gen(1)}
        conn.send(("ok", {"model": spec, "source": source.spec, "layers": model.config.num_hidden_layers,
                          **param_counts(model), "disk_bytes": disk_bytes(source)}))
        with torch.inference_mode():
            while True:
                job = conn.recv()
                if job == "stop":
                    break
                _sync(device)
                t0 = time.perf_counter()
                jobs[job]()
                _sync(device)
                conn.send(("ok", time.perf_counter() - t0))
        out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
        if str(device).startswith("cuda"):
            out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
        conn.send(("ok", out))
    except BaseException as e:  # report, do not hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def measure_many(specs: list[str], dtype: str = "float32", device: str = "cpu", seqlen: int = 512,
                 prompt_len: int = 128, new_tokens: int = 64, batch: int = 1, reps: int = 5, warmup: int = 1,
                 trust_remote_code: bool = False) -> list[dict]:
    """Speed and memory of several models, each in its own process, timed in interleaved rounds."""
    from ..errors import PrunekitError

    settings = {"seqlen": seqlen, "prompt_len": prompt_len, "new_tokens": new_tokens, "batch": batch,
                "reps": reps, "warmup": warmup, "dtype": dtype, "threads": torch.get_num_threads(),
                "interleaved": True}
    ctx = mp.get_context("spawn")
    workers = []
    finished = False
    session = uuid.uuid4().hex       # lets ratios() pair the rounds of models timed together

    def ask(i, job):
        conn = workers[i][0]
        if job is not None:
            conn.send(job)
        try:
            status, value = conn.recv()
        except EOFError:
            workers[i][1].join(timeout=5)
            status, value = "error", f"its worker process ended early (exit code {workers[i][1].exitcode})"
        if status != "ok":
            raise PrunekitError(f"measuring {specs[i]} failed: {value}")
        return value

    try:
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec, settings, device, trust_remote_code), daemon=True)
            proc.start()
            child.close()   # the worker holds its end now; a dead worker then reads as EOF, not a hang
            workers.append((parent, proc))
        results = [ask(i, None) for i in range(len(specs))]
        times = [{"prefill": [], "generate": [], "generate1": []} for _ in specs]
        rounds = warmup + reps
        for job in ("prefill", "generate", "generate1"):
            for r in range(rounds):
                for i in range(len(specs)):
                    t = ask(i, job)
                    if r >= warmup:
                        times[i][job].append(t)
        for i, res in enumerate(results):
            res.update(ask(i, "stop"))
            t = times[i]
            t_full, t_one = statistics.median(t["generate"]), statistics.median(t["generate1"])
            res.update(prefill_s=statistics.median(t["prefill"]), prefill_all_s=t["prefill"],
                       decode_tokens_per_s=_tokens_per_s(batch, new_tokens, t_full, t_one),
                       decode_all_tokens_per_s=[_tokens_per_s(batch, new_tokens, a, b)
                                                for a, b in zip(t["generate"], t["generate1"])],
                       settings=settings, device=device, session=session)
        finished = True
        return results
    finally:
        for conn, proc in workers:  # after a failure the others still wait for work: end them
            proc.join(timeout=30 if finished else 0)
            if proc.is_alive():
                proc.kill()


def _tokens_per_s(batch, new_tokens, t_full, t_one):
    return batch * (new_tokens - 1) / max(t_full - t_one, 1e-9)


def _ratio(pruned: dict, dense: dict, key: str, rounds_key: str, paired: bool) -> float:
    if paired:
        return statistics.median(a / b for a, b in zip(pruned[rounds_key], dense[rounds_key]))
    return pruned[key] / dense[key]


def ratios(pruned: dict, dense: dict) -> dict:
    """pruned / dense. For models timed together (same session), speed ratios are medians of the
    per-round ratios; otherwise ratios of the medians."""
    paired = pruned.get("session") is not None and pruned.get("session") == dense.get("session")
    r = {"params": pruned["params_total"] / dense["params_total"],
         "layers": pruned["layers"] / dense["layers"],
         "prefill_latency": _ratio(pruned, dense, "prefill_s", "prefill_all_s", paired),
         "decode_tokens_per_s": _ratio(pruned, dense, "decode_tokens_per_s", "decode_all_tokens_per_s", paired),
         "peak_rss": pruned["peak_rss_gb"] / dense["peak_rss_gb"], "paired_rounds": paired}
    if pruned.get("disk_bytes") and dense.get("disk_bytes"):
        r["disk"] = pruned["disk_bytes"] / dense["disk_bytes"]
    if "peak_gpu_gb" in pruned and "peak_gpu_gb" in dense:
        r["peak_gpu"] = pruned["peak_gpu_gb"] / dense["peak_gpu_gb"]
    return r
