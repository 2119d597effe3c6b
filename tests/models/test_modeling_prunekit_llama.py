"""The pruned Llama attention's remote code: it fills the cache under every keyword and refuses a
cache it cannot place."""
import pytest
import torch
from transformers import DynamicCache

from prunekit.models.modeling_prunekit_llama import PrunedLlamaAttention, PrunedLlamaConfig

from tests.helpers.models import VOCAB


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


@pytest.mark.parametrize("keyword", ["cache", "past_key_values"])
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
    with pytest.raises(TypeError, match="unknown keyword"):      # transformers 4's name, never passed by 5
        attn(x, (cos, sin), None, past_key_value=DynamicCache(config=cfg))
    with pytest.raises(TypeError, match="two different"):
        attn(x, (cos, sin), None, cache=DynamicCache(config=cfg), past_key_values=DynamicCache(config=cfg))
