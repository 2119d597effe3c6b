"""search-llm --attention kv-groups and keep: the saved model is in the DeciLM layout, computes
what the masked dense model computes, counts its parameters as the search does, and a
reduction that keeps every KV head is the dense model."""
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.errors import ConfigError
from prunekit.methods import SearchConfig
from prunekit.methods.width.genome import Genome, Shape
from prunekit.methods.width.slicing import DenseWeights, KVFit, shape_of
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, tiny_model

SMALL = dict(generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05, fitness_seqlen=16,
             admm_iters=5)


def ids():
    return torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attention,fit", [("kv-groups", "weighted"), ("kv-groups", "mean"), ("keep", "weighted")])
def test_servable_width_is_decilm_and_computes_the_masked_model(family, attention, fit, tmp_path):
    model = tiny_model(family, 4, windowed=False)
    cfg = SearchConfig(keep=0.7, attention=attention, kv_fit=fit, **SMALL)
    res = prune(model, cfg, ids(), progress=False)
    small = res.model
    assert type(small).__name__ == "DeciLMForCausalLM"
    assert torch.allclose(small(ids()).logits, model(ids()).logits, atol=1e-4)   # `model` is left masked
    a = ModelAdapter(small)
    kept = sum(lin.weight.numel() for b in a.layers for lin in a.block_linears(b).values())
    assert kept == res.details["block_params_kept"]
    widths = res.details["widths"]
    if attention == "keep":
        assert widths["kv_heads"] == [2] * 4
    assert [a.role(b, "k").out_features // 16 for b in a.layers] == widths["kv_heads"]
    small.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert torch.equal(loaded(ids()).logits, small(ids()).logits)


@pytest.mark.parametrize("how", ["mean", "weighted"])
def test_merging_equal_kv_heads_is_exact(how):
    """A model whose two KV heads are equal in every block keeps its function with one KV head,
    in the masked dense model and in the smaller DeciLM one."""
    from prunekit.methods.width.slicing import sliced_model
    model = tiny_model("llama", 3, windowed=False)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        for block in adapter.layers:
            for lin in (block.self_attn.k_proj, block.self_attn.v_proj):
                lin.weight[16:] = lin.weight[:16]
    reference = model(ids()).logits
    shape = shape_of(adapter)
    genome = Genome([torch.ones(2, 8, dtype=torch.bool)] * 3, [torch.ones(96, dtype=torch.bool)] * 3, 3, kv=[1, 1, 1])
    energy = [torch.rand(4, 16, generator=torch.Generator().manual_seed(b)) for b in range(3)]
    DenseWeights(adapter, KVFit(how, energy)).apply(genome, shape)
    assert torch.allclose(model(ids()).logits, reference, atol=1e-5)
    small = sliced_model(model, genome, shape)
    assert small.config.block_configs[0].attention.n_heads_in_group == 4
    assert torch.allclose(small(ids()).logits, reference, atol=1e-5)


def test_kv_groups_are_refused_where_the_layout_cannot_state_them():
    with pytest.raises(ConfigError, match="cannot state this model"):
        prune(tiny_model("opt", 2), SearchConfig(keep=0.7, attention="kv-groups", **SMALL), ids(), progress=False)


def test_width_multiple_is_checked_against_the_mlp_alone_when_heads_are_kept():
    model = tiny_model("llama", 2, windowed=False)       # head dim 16, MLP 96
    prune(copy.deepcopy(model), SearchConfig(keep=0.8, attention="keep", width_multiple=32, **SMALL), ids(),
          progress=False)
    with pytest.raises(ConfigError, match="give at most 16"):
        prune(model, SearchConfig(keep=0.8, width_multiple=32, **SMALL), ids(), progress=False)
