"""`prunekit bench` as a function: speed and memory of a model and of its dense source, each in
its own process, timed in interleaved rounds, with ratios; and the table the command prints."""
from __future__ import annotations

from pathlib import Path

from ..export.atomic import atomic_write_text, json_text
from ..errors import PrunekitError
from ..export.save import REPORT_NAME, read_report, update_report
from ..models.paths import check_not_itself
from .common import at_least, check_device
from .preflight import check_positions, check_remote_code, fit_window, local_config, model_positions

DEFAULT_SEQLEN = 512
DEFAULT_PROMPT_LEN = 128


def bench_model(model: str, *, baseline: str | None = None, dtype: str = "float32", device: str = "cpu",
                seqlen: int | None = None, prompt_len: int | None = None, new_tokens: int = 64, batch: int = 1, reps: int = 5,
                warmup: int = 1, trust_remote_code: bool = False, output: str | None = None,
                save_to_model: bool = False) -> dict:
    """Measure `model` and `baseline` (default: the source named in the folder's report). The prefill
    length defaults to 512 and the decode prompt to 128 tokens, shortened where the models have
    fewer positions (the prompt leaves room for the new tokens); lengths given that do not fit are
    refused. Returns {"command", "pruned", "baseline", "ratios"}."""
    from ..eval.speed import measure_many, ratios

    device = check_device(device)
    for name, value in (("seqlen", seqlen), ("prompt_len", prompt_len), ("reps", reps), ("batch", batch)):
        at_least(name, value)
    at_least("new_tokens", new_tokens, 2)
    at_least("warmup", warmup, 0)
    if output and Path(output).is_dir():
        raise PrunekitError(f"--output {output} is a folder; give a JSON file name")
    prior = read_report(model)
    if save_to_model and prior is None:
        raise PrunekitError(f"--save-to-model needs a prunekit output folder; {model} has no {REPORT_NAME}")
    if baseline is None and prior is not None:
        baseline = (prior.get("model") or {}).get("source")
    check_not_itself(model, "baseline", baseline)
    specs = [model] + ([baseline] if baseline else [])
    configs = [local_config(spec) or {} for spec in specs]
    limits = [n for n in (model_positions(c) for c in configs) if n]
    positions = {"max_position_embeddings": min(limits)} if limits else {}
    seqlen, _ = fit_window(positions, seqlen, DEFAULT_SEQLEN)
    prompt_len, _ = fit_window(positions, prompt_len, DEFAULT_PROMPT_LEN, room=new_tokens)
    for spec, config in zip(specs, configs):   # refused here, not in a worker's traceback
        check_remote_code(spec, trust_remote_code)
        check_positions(config, seqlen=seqlen, prompt_len=prompt_len)
    measured = measure_many([model] + ([baseline] if baseline else []), dtype=dtype, device=device, seqlen=seqlen,
                            prompt_len=prompt_len, new_tokens=new_tokens, batch=batch, reps=reps, warmup=warmup,
                            trust_remote_code=trust_remote_code)
    result = {"command": "bench", "model": model, "pruned": measured[0]}
    if baseline:
        result["baseline_spec"] = baseline
        result["baseline"] = measured[1]
        result["ratios"] = ratios(result["pruned"], result["baseline"])
    if output:
        atomic_write_text(output, json_text(result))
    if save_to_model:
        update_report(model, {"bench": result})
    return result


_ROWS = [("layers", "layers", "{:d}", "layers"), ("parameters", "params_total", "{:,d}", "params"),
         ("size on disk (MB)", "disk_bytes", "{:.1f}", "disk"),
         ("prefill latency (ms)", "prefill_s", "{:.1f}", "prefill_latency"),
         ("decode tokens/s", "decode_tokens_per_s", "{:.1f}", "decode_tokens_per_s"),
         ("peak RSS (GB)", "peak_rss_gb", "{:.2f}", "peak_rss")]
_SCALE = {"disk_bytes": 1e-6, "prefill_s": 1e3}


def format_bench(result: dict, device: str = "cpu", output: str | None = None) -> str:
    baseline = result.get("baseline_spec")
    s = result["pruned"]["settings"]
    lines = [f"prunekit bench: {result['model']}" + (f" against {baseline}" if baseline else "") + f" on {device}",
             f"  prefill batch 1 x {s['seqlen']}; decode batch {s['batch']}, prompt {s['prompt_len']}, "
             f"{s['new_tokens']} new tokens; median of {s['reps']} interleaved rounds after {s['warmup']} warm-up",
             *(["  ratio: the median of the per-round ratios (each round's pair ran back to back), so it need "
                "not equal the ratio of the two medians"] if baseline else []),
             f"  {'':22s}{'model':>14s}" + (f"{'baseline':>14s}{'ratio':>10s}" if baseline else "")]
    for label, key, fmt, rkey in _ROWS:
        def cell(d):
            v = d.get(key)
            return "-" if v is None else fmt.format(v * _SCALE[key] if key in _SCALE else v)
        line = f"  {label:22s}{cell(result['pruned']):>14s}"
        if baseline:
            r = result["ratios"].get(rkey)
            line += f"{cell(result['baseline']):>14s}{'-' if r is None else f'{r:.3f}':>10s}"
        lines.append(line)
    if output:
        lines.append(f"  saved         {output}")
    return "\n".join(lines)
