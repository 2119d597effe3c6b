"""The streamed output: sharded input and output load with from_pretrained, a bf16 source stays bf16."""
import json

import torch
from safetensors import safe_open

from prunekit.methods import SparseGPTConfig, WandaConfig
from prunekit.streaming import stream_prune

from tests.helpers.checkpoints import (assert_byte_equal as _assert_byte_equal, pruned_in_memory as _in_memory,
                                       read_folder as _read_folder, save_folder as _save)
from tests.helpers.models import VOCAB, plain_model


def _ids(n=4, L=32, seed=0):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


def test_sharded_input_and_output_load_with_from_pretrained(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    src = _save(plain_model("llama", layers=4), tokenizer, tmp_path / "src", shard="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    ids = _ids()
    stream_prune(str(src), WandaConfig(sparsity=0.5), ids, tmp_path / "out", max_shard_bytes=150_000, progress=False)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "out" / s).is_file() for s in shards)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards
    for s in shards:   # bounded, except a single unit larger than the bound (here the embeddings and head)
        with safe_open(str(tmp_path / "out" / s), framework="pt") as h:
            units = {k.split(".")[2] if k.startswith("model.layers.") else "rest" for k in h.keys()}
        assert (tmp_path / "out" / s).stat().st_size <= 150_000 + 4096 or len(units) == 1, (s, units)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    ref = _in_memory(src, WandaConfig(sparsity=0.5), ids)
    x = _ids(1, 16, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


def test_bf16_source_stays_bf16(tokenizer, tmp_path):
    src = _save(plain_model("llama"), tokenizer, tmp_path / "src", dtype=torch.bfloat16)
    ids = _ids()
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, tmp_path / "out", progress=False)
    out = _read_folder(tmp_path / "out")
    assert {v.dtype for v in out.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    _assert_byte_equal(out, _in_memory(src, SparseGPTConfig(sparsity=0.5), ids, "bfloat16"))
