"""Runs inside llm-compressor's own virtual environment: prune a checkpoint folder with one of its
pruning modifiers on given calibration windows, save a plain checkpoint, record wall time and peak RSS.

    .venv-llmcompressor/bin/python llmc_prune.py --model DIR --windows calib.pt --method sparsegpt \
        --sparsity 0.5 --mask 2:4 --output OUT

--mask uses llm-compressor's own N:M convention (N pruned of every M); 2:4 and 4:8 mean the same
in prunekit. Writes OUT/peer_report.json; on failure writes only {"error": ...} to --error-file.
"""
import argparse
import json
import resource
import shutil
import time
import traceback


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--windows", required=True)
    ap.add_argument("--method", required=True, choices=["sparsegpt", "wanda", "magnitude"])
    ap.add_argument("--sparsity", type=float, required=True)
    ap.add_argument("--mask", default="0:0")
    ap.add_argument("--output", required=True)
    ap.add_argument("--error-file", required=True)
    args = ap.parse_args()
    try:
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import MagnitudePruningModifier, SparseGPTModifier, WandaPruningModifier

        windows = torch.load(args.windows)
        ds = Dataset.from_dict({"input_ids": windows.tolist(), "attention_mask": torch.ones_like(windows).tolist()})
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(args.model)
        # only the decoder-block projections: "Linear" with ignore=["lm_head"] still reaches the
        # lm_head weight, which SmolLM2 ties to its embeddings, and prunes them too
        common = dict(targets=[r"re:.*layers\.\d+\.(self_attn|mlp)\.\w+_proj$"])
        if args.method == "sparsegpt":
            recipe = SparseGPTModifier(sparsity=args.sparsity, mask_structure=args.mask, block_size=128,
                                       dampening_frac=0.01, **common)
        elif args.method == "wanda":
            recipe = WandaPruningModifier(sparsity=args.sparsity, mask_structure=args.mask, **common)
        else:
            # a training-time (gradual) modifier; asked here for its final sparsity at once
            recipe = MagnitudePruningModifier(targets=[r"re:.*layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$"],
                                              init_sparsity=args.sparsity, final_sparsity=args.sparsity, start=0,
                                              end=0, update=0,
                                              mask_structure="unstructured" if args.mask == "0:0" else args.mask)
        t0 = time.perf_counter()
        oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=windows.shape[0],
                max_seq_length=windows.shape[1], shuffle_calibration_samples=False)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        model.save_pretrained(args.output, save_compressed=False)
        tok.save_pretrained(args.output)
        with open(f"{args.output}/peer_report.json", "w") as f:
            json.dump({"prune_s": seconds, "peak_rss_gb": peak, "method": args.method, "sparsity": args.sparsity,
                       "mask": args.mask}, f, indent=2)
    except Exception as e:  # the table keeps the configuration with its error in one line
        shutil.rmtree(args.output, ignore_errors=True)
        with open(args.error_file, "w") as f:
            json.dump({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
                       "traceback": traceback.format_exc()[-3000:]}, f)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
