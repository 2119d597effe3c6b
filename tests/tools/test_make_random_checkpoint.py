"""tools/make_random_checkpoint.py writes what from_pretrained reads."""
import json
from pathlib import Path

import torch

from tests.helpers import ROOT
from tests.helpers.models import VOCAB


def _random_checkpoint_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_random_checkpoint", ROOT / "tools" / "make_random_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_random_llama(path: Path, tokenizer, layers: int, hidden: int, inter: int, dtype=torch.float32,
                        shard_bytes: int = 10**8) -> int:
    """A random Llama written by the benchmark script's shard writer (one tensor in memory at a time)."""
    from transformers import LlamaConfig
    from tqdm import tqdm

    mk = _random_checkpoint_module()
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


def test_random_checkpoint_script_writes_what_from_pretrained_reads(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    mk = _random_checkpoint_module()
    shape = mk.shape_for(1e9)
    assert abs(shape["total"] - 1e9) / 1e9 < 0.05          # the parameter count asked for, within 5%
    _write_random_llama(tmp_path / "rand", tokenizer, layers=3, hidden=128, inter=384, dtype=torch.bfloat16,
                        shard_bytes=200_000)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "rand", dtype="auto")
    sd = model.state_dict()
    name = "model.layers.1.mlp.up_proj.weight"
    assert sd[name].dtype == torch.bfloat16
    assert torch.equal(sd[name], mk.make_tensor(name, (384, 128), torch.bfloat16, 0))
    assert torch.equal(sd["model.norm.weight"], torch.ones(128, dtype=torch.bfloat16))
    assert len(list((tmp_path / "rand").glob("*.safetensors"))) > 3
