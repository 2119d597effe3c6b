"""Width slicing: the sliced model equals the masked model and reloads (also with sliding windows
and QK norms), and decodes with the KV cache as without."""
import copy
import inspect

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from prunekit.api import prune
from prunekit.methods import SearchConfig
from prunekit.methods.width.genome import Genome
from prunekit.methods.width.slicing import DenseWeights, shape_of, sliced_model
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, WINDOW, plain_model, tiny_model


def _window_ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["standard", "uniform", "per-layer"])
@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "phi3"])
def test_sliced_sliding_window_and_qk_norm_models_compute_the_masked_model(family, layout, tmp_path):
    """Width outputs of models with sliding windows (all layers: Mistral, Phi-3; some: Qwen2, Qwen3),
    per-head q/k norms (Qwen3) and fused projections (Phi-3, sliced into separate ones): the sliced model, saved and reloaded, computes the masked dense
    model on a window longer than the sliding window, and decodes with the KV cache as without."""
    from prunekit.methods.width.slicing import DenseWeights, shape_of, sliced_model

    model = tiny_model(family)
    with torch.no_grad():     # q/k norm weights that are not all ones, so a wrong gather shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if "norm" in name else 0.0, 0.3)
    adapter = ModelAdapter(model)
    types = adapter.layer_types
    shape = shape_of(adapter)
    genome = _genome(shape, *LAYOUTS[layout])
    small = sliced_model(model, genome, shape)
    # fused projections come apart in the variable-width code, even at one width
    assert type(small).__name__.startswith("Pruned") == (layout != "standard" or family == "phi3")
    assert ModelAdapter(small).layer_types == types[:genome.depth]
    ids = _window_ids(2, 3 * WINDOW, seed=1)
    logits = _check_decoding(small, ids)
    DenseWeights(adapter).apply(genome, shape)
    with torch.no_grad():
        assert torch.allclose(logits, model(ids).logits, atol=1e-5)
    small.save_pretrained(tmp_path / "w")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "w", trust_remote_code=True).eval()
    assert torch.allclose(_check_decoding(reloaded, ids), logits, atol=1e-5)
    if "sliding_attention" not in types[:genome.depth]:
        return      # Qwen2's first blocks are full-attention ones
    # the window matters on this model: the same weights with a window longer than the input differ
    wide = copy.deepcopy(small)
    wide.config.sliding_window = 10 * ids.shape[1]
    with torch.no_grad():
        assert not torch.allclose(wide(ids, use_cache=False).logits, logits, atol=1e-3)


def _ids(n=4, length=64, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt"])
def test_sliced_model_equals_masked_model_and_reloads(family, tmp_path):
    model = plain_model(family)
    if family in ("qwen2", "opt"):   # biases: removed rows must lose their biases too
        with torch.no_grad():
            for block in ModelAdapter(model).layers:
                for name in ("q_proj", "k_proj", "v_proj"):
                    getattr(block.self_attn, name).bias.normal_(0, 0.5)
                if family == "opt":
                    block.fc1.bias.normal_(0, 0.5)
    dense_params = sum(p.numel() for p in model.parameters())
    res = prune(model, SearchConfig(keep=0.7, generations=2, population=6, mutants=4, crossovers=2, randoms=2,
                                    top_k=3, band=0.05, fitness_seqlen=32), _ids(), progress=False)
    small = res.model
    ids = _ids(2, 24, seed=1)
    with torch.no_grad():
        masked = model(ids).logits            # the dense model, left masked and reformed
        assert torch.allclose(small(ids).logits, masked, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < dense_params
    assert res.details["block_params_kept"] == sum(
        lin.weight.numel() for _, lin in ModelAdapter(small).all_linears())
    small.save_pretrained(tmp_path / "w")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "w", trust_remote_code=True).eval()
    x = ids[:1, :6]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, masked, atol=1e-5)
        a = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False, use_cache=True,
                              pad_token_id=0)
        b = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False, use_cache=False,
                              pad_token_id=0)
    assert torch.equal(a, b)


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
    model = plain_model(family)
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
