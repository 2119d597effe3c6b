"""`prunekit analyze`: layer similarity (CKA heat map, adjacent cosine, block influence)."""
from __future__ import annotations

from .args import add_model_args


def add_parser(sub) -> None:
    a = sub.add_parser("analyze", help="layer similarity: CKA heat map, adjacent cosine, block influence",
                       description="Layer-by-layer linear CKA of decoder-block outputs (token-level, float64), the "
                                   "cosine similarity of adjacent blocks and ShortGPT's block influence, on "
                                   "calibration windows; saved as analysis.json, cka.png and layer_scores.png.")
    add_model_args(a)
    a.add_argument("--calib", default="c4", help="text to analyse on: as for prune (default c4)")
    a.add_argument("--nsamples", type=int, default=16, help="windows (default 16)")
    a.add_argument("--seqlen", type=int, default=None,
                   help="window length in tokens (default 128, or the model's positions where fewer)")
    a.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    a.add_argument("--skip-first", type=int, default=0,
                   help="leave out the first N positions of every window (attention-sink tokens with huge "
                        "activations can dominate linear CKA); default 0")
    a.add_argument("--output", required=True, help="folder for analysis.json and the PNGs")
    a.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def run(args) -> int:
    from ..workflows import analyze_model
    report = analyze_model(args.model, args.output, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                           seed=args.seed, skip_first=args.skip_first, data_dir=args.data_dir, dtype=args.dtype,
                           device=args.device, trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    bi = report["block_influence"]
    low = sorted(range(len(bi)), key=lambda i: bi[i])[:5]
    print(f"prunekit analyze: {args.model} ({report['layers']} layers, {report['tokens']} tokens)\n"
          f"  lowest block influence: {', '.join(f'{i} ({bi[i]:.3f})' for i in low)}\n"
          f"  saved         {args.output} (analysis.json, cka.png, layer_scores.png)")
    return 0
