"""Checkpoints on disk for the streaming tests: saving tiny models, reading the tensors back,
comparing them byte for byte with the in-memory path, large random checkpoints written one tensor
at a time (tools/make_random_checkpoint.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

import prunekit
from prunekit.methods import MagnitudeConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig

from tests.helpers import ROOT
from tests.helpers.models import VOCAB, plain_model


def calibration_ids(n=4, L=32, seed=0):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


# the layer-wise methods every streaming test runs, in small settings
LAYERWISE_CONFIGS = {
    "magnitude": lambda: MagnitudeConfig(sparsity=0.5),
    "wanda": lambda: WandaConfig(sparsity=0.5),
    "sparsegpt": lambda: SparseGPTConfig(pattern="2:4"),
    "sparsellm": lambda: SparseLLMConfig(sparsity=0.5, iterations=2),
}


def read_folder(path) -> dict:
    """Every tensor of a safetensors checkpoint folder (single file or shards)."""
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def save_folder(model, tokenizer, path, dtype=None, shard=None):
    if dtype is not None:
        model = model.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    tokenizer.save_pretrained(path)
    return path


def pruned_in_memory(path, config, ids, dtype="float32"):
    model, _, _ = prunekit.load_model(str(path), dtype)
    prunekit.prune(model, config, ids, progress=False)
    return model


def assert_byte_equal(streamed: dict, model):
    ref = model.state_dict()
    # a tied head is stored once, as save_pretrained does
    left_out = {n for n in ref if n not in streamed}
    assert left_out == ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    assert set(streamed) <= set(ref)
    for k, v in streamed.items():
        assert v.dtype == ref[k].dtype, k
        assert torch.equal(v.contiguous().view(torch.uint8), ref[k].contiguous().view(torch.uint8)), k


def random_checkpoint_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_random_checkpoint", ROOT / "tools" / "make_random_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_random_llama(path: Path, tokenizer, layers: int, hidden: int, inter: int, dtype=torch.float32,
                        shard_bytes: int = 10**8) -> int:
    """A random Llama written by the benchmark script's shard writer (one tensor in memory at a time)."""
    from transformers import LlamaConfig
    from tqdm import tqdm

    mk = random_checkpoint_module()
    cfg = dict(hidden_size=hidden, intermediate_size=inter, num_attention_heads=hidden // 64,
               num_key_value_heads=max(1, hidden // 256), num_hidden_layers=layers, vocab_size=VOCAB,
               tie_word_embeddings=False, head_dim=64)
    path.mkdir()
    code = {torch.float32: "F32", torch.bfloat16: "BF16"}[dtype]
    shards = mk.plan_shards(mk.tensors_of(cfg), dtype.itemsize, shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, tensors in zip(names, shards):
        mk.write_shard(path / name, tensors, dtype, code, 0, tqdm(disable=True))
    index = {"metadata": {}, "weight_map": {t: n for n, ts in zip(names, shards) for t, _ in ts}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    LlamaConfig(**cfg, bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype=str(dtype).split(".")[1]).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def pruned_pair(tokenizer, tmp_path, family="llama"):
    dense = plain_model(family)
    dense.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    pruned = plain_model(family)
    prunekit.prune(pruned, MagnitudeConfig(sparsity=0.5), None, progress=False)
    pruned.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    return dense, pruned
