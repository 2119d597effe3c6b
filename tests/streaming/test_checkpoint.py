"""Streaming every kind of input prunekit itself writes equals the in-memory run, tensor for
tensor, persistent buffers included (a width-pruned block's kept rotary dims), and with the
same config (depth and every per-block list). Needs no data folder: a word-level tokenizer over
the tiny vocabulary, and recovery text made of its words."""
import json
import random
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.export.save import save_checkpoint
from prunekit.methods import (MagnitudeConfig, PPLConfig, SLEBConfig, SearchConfig, ShortGPTConfig, SparseGPTConfig,
                              SparseLLMConfig, WandaConfig)
from prunekit.models.variable_width import PER_LAYER_KEYS
from prunekit.streaming import stream_perplexity, stream_prune

from tests.helpers.checkpoints import read_folder as _read_folder
from tests.helpers.models import VOCAB, plain_model
from tests.helpers.tokenizers import word_tokenizer


METHODS = {
    "magnitude": lambda: MagnitudeConfig(sparsity=0.5),
    "wanda": lambda: WandaConfig(sparsity=0.5),
    "sparsegpt": lambda: SparseGPTConfig(pattern="2:4"),
    "sparsellm": lambda: SparseLLMConfig(sparsity=0.5, iterations=2),
    "shortgpt": lambda: ShortGPTConfig(remove_layers=1),
    "sleb": lambda: SLEBConfig(remove_layers=1),
    "ppl": lambda: PPLConfig(remove_layers=1, plus_heuristic=False),
    "shortgpt-sublayer": lambda: ShortGPTConfig(remove_layers=3, unit="sublayer"),
    "sleb-sublayer": lambda: SLEBConfig(remove_layers=2, unit="sublayer"),
}


INPUTS = ["dense", "sparse", "depth", "width", "width-opt", "recovered", "bf16", "sharded", "decilm", "width-mlp"]


def _ids(n=4, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _save(model, tok, path: Path) -> str:
    save_checkpoint(model, tok, None, path)
    return str(path)


def _width(family: str, tok, path: Path) -> str:
    res = prunekit.prune(plain_model(family, layers=4), SearchConfig(keep=0.7, generations=0, band=0.05,
                                                                        fitness_seqlen=32), _ids(), progress=False)
    return _save(res.model, tok, path)


def _recovered(width: str, tok, root: Path) -> str:
    from prunekit.recovery import RecoveryConfig, recover

    rng = random.Random(0)
    text = root / "train.txt"
    text.write_text("\n".join(" ".join(f"t{rng.randrange(4, VOCAB)}" for _ in range(60)) for _ in range(40)))
    out = root / "recovered"
    recover(width, RecoveryConfig(steps=2, lr=5e-3, seqlen=32, eval_every=2, save_every=2, warmup_steps=0),
            data=str(text), output=str(out), trust_remote_code=True, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    tok = word_tokenizer()
    dense = plain_model("llama", layers=4)
    out = {"dense": _save(dense, tok, root / "dense")}
    sparse = plain_model("llama", layers=4)
    prunekit.prune(sparse, WandaConfig(sparsity=0.5), _ids(), progress=False)
    out["sparse"] = _save(sparse, tok, root / "sparse")
    depth = plain_model("llama", layers=5)
    prunekit.prune(depth, ShortGPTConfig(remove_layers=1), _ids(), progress=False)
    out["depth"] = _save(depth, tok, root / "depth")
    out["width"] = _width("llama", tok, root / "width")
    out["width-opt"] = _width("opt", tok, root / "width-opt")
    out["recovered"] = _recovered(out["width"], tok, root)
    out["bf16"] = _save(plain_model("llama", layers=4).to(torch.bfloat16), tok, root / "bf16")
    sharded = root / "sharded"
    plain_model("llama", layers=4).save_pretrained(sharded, max_shard_size="100KB")
    tok.save_pretrained(sharded)
    out["sharded"] = str(sharded)
    # the Nemotron-NAS layout: blocks that kept one sublayer, and MLP-only widths
    sub = prunekit.prune(plain_model("llama", layers=5), PPLConfig(remove_layers=3, unit="sublayer",
                                                                   plus_heuristic=False), _ids(), progress=False)
    assert type(sub.model).__name__ == "DeciLMForCausalLM"
    out["decilm"] = _save(sub.model, tok, root / "decilm")
    mlp = prunekit.prune(plain_model("llama", layers=4), SearchConfig(keep=0.7, generations=0, band=0.05,
                                                                      fitness_seqlen=32, attention="keep"),
                         _ids(), progress=False)
    out["width-mlp"] = _save(mlp.model, tok, root / "width-mlp")
    return out


def _in_memory(path: str, config):
    model, _, _ = prunekit.load_model(path, "auto", trust_remote_code=True)
    return prunekit.prune(model, config, _ids(), progress=False).model


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind", INPUTS)
def test_streamed_equals_in_memory_on_every_input_kind(inputs, kind, method, tmp_path):
    src = inputs[kind]
    try:
        ref = _in_memory(src, METHODS[method]())
    except PrunekitError as e:         # refused in memory (2:4 on an odd width): refused alike, writing nothing
        with pytest.raises(PrunekitError) as streamed_error:
            stream_prune(src, METHODS[method](), _ids(), tmp_path / "out", progress=False, trust_remote_code=True)
        assert str(streamed_error.value) == str(e) and "\n" not in str(e)
        assert not any(tmp_path.iterdir())
        return
    stream_prune(src, METHODS[method](), _ids(), tmp_path / "out", progress=False, trust_remote_code=True)
    streamed = _read_folder(tmp_path / "out")
    expected = ref.state_dict()
    tied = {"lm_head.weight"} if ref.config.tie_word_embeddings else set()
    assert set(expected) - set(streamed) == tied and set(streamed) <= set(expected)
    for k, v in streamed.items():
        assert v.dtype == expected[k].dtype and v.shape == expected[k].shape, k
        assert torch.equal(_bytes(v), _bytes(expected[k])), k
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_hidden_layers"] == ref.config.num_hidden_layers
    for key in PER_LAYER_KEYS:
        assert config.get(key) == getattr(ref.config, key, None), key
    if config.get("auto_map"):      # the code it names ships with it, so the output loads on its own
        from transformers import AutoModelForCausalLM
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True, dtype=torch.float32)
        # the bytes are equal (above); a bf16 model's rotary buffers differ once cast, hence the tolerance
        assert torch.allclose(loaded(_ids()).logits, ref.float()(_ids()).logits, atol=1e-2)


def test_a_width_block_streamed_has_its_stored_rotary_dims(inputs):
    """The buffer the old streamed path left at its constructed zeros."""
    from prunekit.streaming import StreamedModel

    sm = StreamedModel(inputs["width"], trust_remote_code=True)
    block = sm.load("model.layers.1")
    stored = _read_folder(inputs["width"])["model.layers.1.self_attn.rope_index"]
    assert stored.abs().sum() > 0
    assert torch.equal(block.self_attn.rope_index, stored)


def test_streamed_perplexity_of_a_width_model_equals_in_memory(inputs):
    from prunekit.eval.ppl import perplexity_of_ids

    ids = _ids(3, 64, seed=2).reshape(-1)
    streamed = stream_perplexity(_streamed(inputs["width"]), ids, seqlen=64, progress=False)
    model, _, _ = prunekit.load_model(inputs["width"], "auto", trust_remote_code=True)
    ref = perplexity_of_ids(model, ids, seqlen=64)
    assert streamed["ppl"] == pytest.approx(ref["ppl"], rel=1e-5)


def _streamed(path: str):
    from prunekit.streaming import StreamedModel
    return StreamedModel(path, trust_remote_code=True)
