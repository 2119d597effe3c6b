"""`prunekit bench`: prefill latency, decode speed, parameters and peak memory, against a baseline."""
from __future__ import annotations


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="prefill latency, decode speed, parameters and peak memory, against a baseline",
                       description="Speed and memory of a model and (with --baseline) of the model it came from, "
                                   "each in its own fresh process, timed in interleaved rounds (one repetition of each "
                                   "model per round, so a busy spell of the machine hits both alike), reported with "
                                   "ratios. Times are medians of --reps rounds after --warmup; speed ratios are "
                                   "medians of the per-round ratios.")
    b.add_argument("--model", required=True, help="model to measure: a folder written by prunekit prune, or any model spec")
    b.add_argument("--baseline", default=None,
                   help="dense model to compare with (default: the source named in the folder's prunekit_report.json)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights dtype")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    b.add_argument("--seqlen", type=int, default=None,
                   help="prefill length, batch 1 (default 512, or the models' positions where fewer)")
    b.add_argument("--prompt-len", type=int, default=None,
                   help="decode: prompt length (default 128, or what the models' positions leave room for)")
    b.add_argument("--new-tokens", type=int, default=64, help="decode: tokens generated greedily (default 64)")
    b.add_argument("--batch", type=int, default=1, help="decode: batch size (default 1)")
    b.add_argument("--reps", type=int, default=5, help="measured rounds (default 5)")
    b.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up rounds (default 1)")
    b.add_argument("--trust-remote-code", action="store_true", help="allow checkpoints with their own modeling code")
    b.add_argument("--output", default=None, help="JSON file to write the measurements to")
    b.add_argument("--save-to-model", action="store_true",
                   help="also merge the measurements into MODEL/prunekit_report.json (for prunekit compare)")


def run(args) -> int:
    from ..workflows import bench_model
    from ..workflows.bench import format_bench
    result = bench_model(args.model, baseline=args.baseline, dtype=args.dtype, device=args.device, seqlen=args.seqlen,
                         prompt_len=args.prompt_len, new_tokens=args.new_tokens, batch=args.batch, reps=args.reps,
                         warmup=args.warmup, trust_remote_code=args.trust_remote_code, output=args.output,
                         save_to_model=args.save_to_model)
    print(format_bench(result, args.device, args.output))
    return 0
