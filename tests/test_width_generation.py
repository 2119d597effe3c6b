"""Width outputs decode correctly with the KV cache: for every family and every kind of output
(a standard checkpoint, one pruned width in every block, per-block widths), cached greedy
generation equals uncached generation token for token, and logits computed step by step through
the cache equal one full forward, before and after a save and a reload. transformers 5.24
renamed the keyword the cache reaches attention under; the shipped attention missed it and
silently never filled the cache, which only a decode through the cache shows."""
import inspect

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from prunekit.models.modeling_prunekit_llama import PrunedLlamaAttention, PrunedLlamaConfig
from prunekit.methods.width.genome import Genome
from prunekit.methods.width.slicing import DenseWeights, shape_of, sliced_model
from prunekit.models.adapter import ModelAdapter

from .conftest import VOCAB, make_tiny_model

# per layout: kept attention units per KV head of each block (None: all), kept MLP channels of
# each block, kept depth. The tiny models have 3 blocks, 8 rotary pairs (OPT: 16 dims) per head,
# 128 MLP channels.
LAYOUTS = {
    "standard": (None, [96, 96, 96], 3),            # attention whole, one MLP width: a stock config
    "uniform": ([5, 5], [80, 80], 2),               # one pruned width everywhere, fewer blocks
    "per-layer": ([6, 3, None], [96, 40, 128], 3),  # every block its own widths, one left whole
}


def _genome(shape, units, channels, depth, seed=0) -> Genome:
    """Random kept units (each KV head its own set, so rotary frequencies differ per head)."""
    g = torch.Generator().manual_seed(seed)
    attn, mlp = [], []
    for b in range(shape.layers):
        k = shape.pairs if units is None or b >= len(units) or units[b] is None else units[b]
        rows = torch.zeros(shape.kv_heads, shape.pairs, dtype=torch.bool)
        for h in range(shape.kv_heads):
            rows[h, torch.randperm(shape.pairs, generator=g)[:k]] = True
        attn.append(rows)
        m = torch.zeros(shape.intermediate, dtype=torch.bool)
        m[torch.randperm(shape.intermediate, generator=g)[:channels[b] if b < len(channels) else shape.intermediate]] = True
        mlp.append(m)
    return Genome(attn, mlp, depth)


def _dense(family):
    model = make_tiny_model(family)
    if family in ("qwen2", "opt"):   # biases on the sliced rows must follow them
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 1 and name.endswith("bias"):
                    p.normal_(0, 0.3)
    return model


def _cache_keyword(model) -> str:
    # the model-level keyword changed with the attention one (5.24: `cache`)
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def _stepwise_logits(model, ids, prompt: int) -> torch.Tensor:
    """The prompt in one call, then one token per call, all through one KV cache."""
    cache = DynamicCache(config=model.config)
    kw = {_cache_keyword(model): cache, "use_cache": True}
    out = [model(ids[:, :prompt], **kw).logits]
    for t in range(prompt, ids.shape[1]):
        out.append(model(ids[:, t:t + 1], **kw).logits)
    assert cache.get_seq_length() == ids.shape[1]     # the cache was filled, block by block
    return torch.cat(out, dim=1)


@torch.no_grad()
def _check_decoding(model, ids):
    full = model(ids, use_cache=False).logits
    step = _stepwise_logits(model, ids, prompt=5)
    assert (step - full).abs().max().item() < 1e-4
    x = ids[:, :5]
    gen = dict(attention_mask=torch.ones_like(x), max_new_tokens=10, min_new_tokens=10, do_sample=False,
               pad_token_id=0)
    cached = model.generate(x, use_cache=True, **gen)
    uncached = model.generate(x, use_cache=False, **gen)
    assert cached.shape == (2, 15)
    assert torch.equal(cached, uncached)
    return full


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt"])
def test_width_output_decodes_with_the_cache_as_without(family, layout, tmp_path):
    model = _dense(family)
    adapter = ModelAdapter(model)
    shape = shape_of(adapter)
    genome = _genome(shape, *LAYOUTS[layout])
    small = sliced_model(model, genome, shape)
    assert type(small).__name__.startswith("Pruned") == (layout != "standard")
    ids = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    logits = _check_decoding(small, ids)

    DenseWeights(adapter).apply(genome, shape)     # the masked dense model: what slicing must compute
    with torch.no_grad():
        assert torch.allclose(logits, model(ids, use_cache=False).logits, atol=1e-5)

    small.save_pretrained(tmp_path / "w")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "w", trust_remote_code=True).eval()
    assert type(reloaded).__name__ == type(small).__name__
    assert torch.allclose(_check_decoding(reloaded, ids), logits, atol=1e-5)


def _attention(heads_dim=6):
    cfg = PrunedLlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, layer_head_dims=[heads_dim])
    attn = PrunedLlamaAttention(cfg, 0).eval()
    attn.rope_index.copy_(torch.tensor([[0, 2, 1, 4, 6, 5], [1, 3, 0, 5, 7, 4]]))
    return cfg, attn


def _rope(length, dim=8):
    pos = torch.arange(length, dtype=torch.float32)
    freq = pos[:, None] * 10000 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)[None]
    emb = torch.cat([freq, freq], -1)[None]
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("keyword", ["cache", "past_key_values", "past_key_value"])
def test_pruned_attention_fills_the_cache_under_every_keyword(keyword):
    cfg, attn = _attention()
    x = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(0))
    cos, sin = _rope(7)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        full, _ = attn(x, (cos, sin), mask)
        cache = DynamicCache(config=cfg)
        first, _ = attn(x[:, :4], (cos[:, :4], sin[:, :4]), mask[..., :4, :4], **{keyword: cache})
        rest, _ = attn(x[:, 4:], (cos[:, 4:], sin[:, 4:]), mask[..., 4:, :], **{keyword: cache})
    assert cache.get_seq_length() == 7
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=1e-5)


def test_pruned_attention_refuses_a_cache_it_cannot_place():
    cfg, attn = _attention()
    x = torch.randn(1, 3, 32)
    cos, sin = _rope(3)
    with pytest.raises(TypeError, match="unknown keyword"):
        attn(x, (cos, sin), None, kv_cache=DynamicCache(config=cfg))
    with pytest.raises(TypeError, match="two different"):
        attn(x, (cos, sin), None, cache=DynamicCache(config=cfg), past_key_values=DynamicCache(config=cfg))
