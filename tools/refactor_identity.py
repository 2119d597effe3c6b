"""Byte-identity check for refactors: prune tiny Llama, OPT and Gemma 3 models (local and global
layers) with fixed seeds through the Python API, in memory and streamed, save them, and hash the
saved weights (streamed: every tensor's name, dtype, shape and bytes, so that a different shard
layout of equal tensors still matches). Run it before a behaviour-preserving change (--write FILE)
and after (--check FILE): every hash must match.

    python tools/refactor_identity.py --write benchmarks/results/refactor_identity.json
    python tools/refactor_identity.py --check benchmarks/results/refactor_identity.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

VOCAB = 384
FAMILIES = ("llama", "opt", "gemma3")
NO_WIDTH = {"gemma3"}   # no variable-width modeling code for Gemma yet: search-llm refuses it


def tiny_model(family: str, seed: int = 0, layers: int = 6):
    from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    elif family == "gemma3":
        from transformers import Gemma3TextConfig
        rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}}
        cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=512,
                               sliding_window=5, layer_types=["sliding_attention", "sliding_attention",
                                                              "full_attention"] * (layers // 3),
                               rope_parameters=rope, query_pre_attn_scalar=24, tie_word_embeddings=True,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
    else:
        cfg = OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=layers, num_attention_heads=4,
                        max_position_embeddings=512, word_embed_proj_dim=64, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0, enable_bias=True)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.eval()
    return model


def cases():
    from prunekit import methods as M
    return {
        "magnitude-50": lambda: M.MagnitudeConfig(sparsity=0.5),
        "magnitude-2:4": lambda: M.MagnitudeConfig(pattern="2:4"),
        "wanda-50": lambda: M.WandaConfig(sparsity=0.5),
        "wanda-2:4": lambda: M.WandaConfig(pattern="2:4"),
        "sparsegpt-60": lambda: M.SparseGPTConfig(sparsity=0.6),
        "sparsegpt-2:4": lambda: M.SparseGPTConfig(pattern="2:4"),
        "sparsellm-1it": lambda: M.SparseLLMConfig(sparsity=0.6, iterations=1),
        "sparsellm-2it": lambda: M.SparseLLMConfig(sparsity=0.6, iterations=2),
        "shortgpt-1": lambda: M.ShortGPTConfig(remove_layers=1),
        "slm-1": lambda: M.SLMConfig(remove_layers=1),
        "slm-top-1": lambda: M.SLMConfig(remove_layers=1, merge="top"),
        "slm-2": lambda: M.SLMConfig(remove_layers=2),
        "slm-top-2": lambda: M.SLMConfig(remove_layers=2, merge="top"),
        "laco-2": lambda: M.LaCoConfig(remove_layers=2, merge_size=3),
        "sleb-1": lambda: M.SLEBConfig(remove_layers=1),
        "ppl-1": lambda: M.PPLConfig(remove_layers=1, plus_heuristic=False),
        "search-0.7": lambda: M.SearchConfig(keep=0.7, generations=2, population=6, mutants=4, crossovers=2,
                                             randoms=2, top_k=3, band=0.05, fitness_seqlen=32),
        "evo-depth-2": lambda: M.EvoDepthConfig(remove_layers=2, stages="32:2,64:1", generations=2, offspring=2),
        "evo-sparsity-50": lambda: M.EvoSparsityConfig(sparsity=0.5, base="wanda", stages="32:2,64:1", generations=2,
                                                       offspring=2, database_dir=DATABASES.name),
        "owl-50": lambda: M.OWLConfig(sparsity=0.5),
    }


STREAMED = ("magnitude-50", "wanda-2:4", "sparsegpt-2:4", "sparsellm-2it", "shortgpt-1", "sleb-1", "ppl-1")
DATABASES = tempfile.TemporaryDirectory(prefix="prunekit-identity-db-")   # evo-sparsity's, built afresh


def tensor_digest(folder: Path) -> str:
    """Every tensor of a checkpoint folder by name: equal tensors hash equal whatever the shards."""
    from safetensors import safe_open
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            tensors.update({k: h.get_tensor(k) for k in h.keys()})
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def run_all() -> dict:
    from prunekit import prune

    torch.set_num_threads(1)   # float sums depend on the thread count; compare like with like
    ids = torch.randint(0, VOCAB, (4, 64), generator=torch.Generator().manual_seed(0))
    out = {}
    for family in FAMILIES:
        for name, make in cases().items():
            if family in NO_WIDTH and name.startswith("search"):
                continue
            model = tiny_model(family)
            torch.manual_seed(0)
            result = prune(model, make(), ids, progress=False)
            with tempfile.TemporaryDirectory() as tmp:
                result.model.save_pretrained(tmp)
                out[f"{family}/{name}"] = digest(Path(tmp))
            print(f"{family}/{name}: {out[f'{family}/{name}'][:16]}", flush=True)
        out.update(run_streamed(family, ids))
    return out


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t3")


def run_streamed(family: str, ids: torch.Tensor) -> dict:
    from prunekit.streaming import stream_prune

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        tiny_model(family).save_pretrained(src)
        word_tokenizer().save_pretrained(src)     # a streamed output carries its input's tokenizer
        for name in STREAMED:
            torch.manual_seed(0)
            stream_prune(str(src), cases()[name](), ids, Path(tmp) / name, progress=False)
            out[f"{family}/streamed/{name}"] = tensor_digest(Path(tmp) / name)
            print(f"{family}/streamed/{name}: {out[f'{family}/streamed/{name}'][:16]}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", help="write the hashes to this JSON file")
    g.add_argument("--check", help="compare with the hashes in this JSON file")
    args = ap.parse_args()
    hashes = run_all()
    if args.write:
        Path(args.write).write_text(json.dumps(hashes, indent=2) + "\n")
        return 0
    want = json.loads(Path(args.check).read_text())
    bad = [k for k in want if hashes.get(k) != want[k]]
    print(f"{len(want) - len(bad)} of {len(want)} outputs byte-identical" + (f"; differ: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
