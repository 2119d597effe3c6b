"""`prunekit export`: a copy of an output that a serving engine's own converter runs as it is."""
from __future__ import annotations

from ..workflows.export import TARGETS


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="a copy that a serving engine's converter runs as it is (--for llama.cpp)",
                       description="Write a copy of a pruned output that a serving engine converts and runs as it "
                                   "is. --for llama.cpp: in the Nemotron-NAS (DeciLM) layout, MLP widths are "
                                   "padded up to llama.cpp's 256 grid with zero channels, a block that keeps "
                                   "attention without an MLP gets a zero MLP of 256 channels, and a block 0 "
                                   "without attention gets a zero attention with one KV head. None of this "
                                   "changes an output (checked before writing); the summary says how many zero "
                                   "parameters it adds. Then run llama.cpp's convert_hf_to_gguf.py on the copy.")
    e.add_argument("--model", required=True, help="a folder written by prunekit prune")
    e.add_argument("--for", dest="target", required=True, choices=TARGETS, help="the engine the copy is for")
    e.add_argument("--output", required=True, help="folder to write the copy to")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    e.add_argument("--trust-remote-code", action="store_true", help="load the model's shipped modeling code")


def run(args) -> int:
    from ..workflows.export import export_model
    result = export_model(args.model, args.output, args.target, args.overwrite, args.trust_remote_code)
    print(f"prunekit export: {args.model} for {args.target}: {result['note']}")
    for change in result["changes"]:
        print(f"  {change}")
    print(f"  saved         {args.output}" if result["written"] else "  nothing written")
    return 0
