"""Rebuilding a depth-pruned model: a merged block takes its projections by rule and its norms
from the base block; a candidate scored by the depth stack is what the rebuilt model computes, on
models whose blocks differ by layer type (sliding-window and full attention, other rotary bases);
the rebuilt model keeps each block's layer type, reloads and generates with the KV cache."""
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.api import prune
from prunekit.engine.stack import BlockStack
from prunekit.methods import SLMConfig, ShortGPTConfig
from prunekit.methods.depth.base import DepthState
from prunekit.methods.depth.rebuild import apply_plan, merged_block
from prunekit.models.adapter import ModelAdapter, get_path

from tests import support_matrix as sm
from tests.helpers.blocks import adapter_for, rel_err, window_ids as _ids
from tests.helpers.models import SLIDING, VOCAB, WINDOW, plain_model, tiny_model


def deep_model(family="llama", layers=8, seed=0):
    return plain_model(family, seed, layers)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_merged_block_takes_projections_by_rule_and_norms_from_base(family):
    model = deep_model(family, 4)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        for b in adapter.layers:
            for norm in adapter.spec.norms:
                get_path(b, norm).weight.normal_()
    blocks = list(adapter.layers)[1:4]
    for rule in ("rdsc", "top"):
        m = merged_block(adapter, blocks, rule)
        for name in adapter.linear_names():
            parts = [get_path(b, name) for b in blocks]
            want = parts[-1].weight if rule == "top" else parts[0].weight + sum(p.weight - parts[0].weight for p in parts[1:])
            assert torch.allclose(get_path(m, name).weight, want, atol=1e-6)
            if parts[0].bias is not None:
                wantb = parts[-1].bias if rule == "top" else parts[0].bias + sum(p.bias - parts[0].bias for p in parts[1:])
                assert torch.allclose(get_path(m, name).bias, wantb, atol=1e-6)
        for norm in adapter.spec.norms:
            assert torch.equal(get_path(m, norm).weight, get_path(blocks[0], norm).weight)


@pytest.mark.parametrize("family", ["llama", "qwen2", "opt"])
def test_merged_model_saves_reloads_and_generates_with_the_kv_cache(family, tmp_path, tokenizer):
    model = deep_model(family, 6)
    ids = torch.randint(3, VOCAB, (2, 20), generator=torch.Generator().manual_seed(5))
    prune(model, SLMConfig(remove_layers=2), ids, progress=False)
    prune(model, ShortGPTConfig(remove_layers=1), ids, progress=False)   # a removal on top of a merge
    assert model.config.num_hidden_layers == 3
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == 3
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert len(ModelAdapter(reloaded).layers) == 3
    x = ids[:1, :8]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)
        cached = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                   use_cache=True, pad_token_id=0)
        uncached = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                     use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    assert [b.self_attn.layer_idx for b in ModelAdapter(reloaded).layers] == [0, 1, 2]


MIXED = ["qwen2", "qwen3", "gemma2", "gemma3"]


def _final_hidden(model, ids):
    with torch.no_grad():
        return model(ids, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("family", MIXED)
def test_stack_candidates_compute_what_the_rebuilt_model_computes(family):
    model = tiny_model(family, layers=6)
    types = list(model.config.layer_types)
    ids = _ids()
    adapter = adapter_for(model)
    stack = BlockStack(adapter, ids)
    state = DepthState(adapter)
    # remove one block and merge two, so that blocks land on positions that held another type
    removed = next(i for i in range(1, 5) if types[i] != types[i + 1])
    state.remove(removed)
    state.merge(removed + 1, removed + 2)
    groups = state.groups
    moved = [g[0] for new, g in enumerate(groups) if types[g[0]] != types[new]]
    assert moved, (types, groups)
    scored = stack.final_hidden(stack.through(state.blocks, stack.start.hidden))

    rebuilt = copy.deepcopy(model)
    apply_plan(adapter_for(rebuilt), groups)
    assert rebuilt.config.layer_types == [types[g[0]] for g in groups]
    own = _final_hidden(rebuilt, ids)
    assert rel_err(scored, own) < 1e-5
    # the kwargs matter here: with the original positions' types the result is another one
    wrong = copy.deepcopy(rebuilt)
    wrong.config.layer_types = types[:len(groups)]
    assert rel_err(_final_hidden(wrong, ids), own) > 1e-3


@pytest.mark.parametrize("family", MIXED)
def test_depth_pruned_mixed_model_reloads_and_generates_with_the_kv_cache(family, tmp_path):
    model = tiny_model(family, layers=6)
    types = list(model.config.layer_types)
    ids = _ids(3, seed=1)
    prune(model, SLMConfig(remove_layers=2), ids, progress=False)
    prune(model, ShortGPTConfig(remove_layers=1), ids, progress=False)
    layers = adapter_for(model).layers
    assert model.config.num_hidden_layers == len(layers) == 3
    # every kept block's attention still has its own type's window, and the config agrees
    for block, kind in zip(layers, model.config.layer_types):
        assert kind in types
        assert (block.self_attn.sliding_window == SLIDING) == (kind == "sliding_attention")
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert reloaded.config.layer_types == model.config.layer_types
    assert [b.self_attn.sliding_window for b in adapter_for(reloaded).layers] == \
           [b.self_attn.sliding_window for b in layers]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)
        x = ids[:1, :8]       # prompt + new tokens run past the sliding window
        kw = dict(attention_mask=torch.ones_like(x), max_new_tokens=3 * SLIDING, min_new_tokens=3 * SLIDING,
                  do_sample=False, pad_token_id=0)
        cached = reloaded.generate(x, use_cache=True, **kw)
        uncached = reloaded.generate(x, use_cache=False, **kw)
    assert cached.shape[1] == 8 + 3 * SLIDING
    assert torch.equal(cached, uncached)
    assert [b.self_attn.layer_idx for b in adapter_for(reloaded).layers] == [0, 1, 2]


def _window_ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def test_gemma_depth_merge_keeps_the_base_blocks_four_norms_and_qk_norms():
    model = tiny_model("gemma3")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    before = [copy.deepcopy(b) for b in ModelAdapter(model).layers]
    res = prunekit.prune(model, sm.example("laco"), _window_ids(), progress=False)
    adapter = ModelAdapter(res.model)
    kept = dict(zip(range(adapter.num_layers), adapter.layers))
    norms = adapter.spec.norms + adapter.spec.qk_norms
    assert len(norms) == 6
    # every block of the result carries exactly some original block's norms (a merge: its base's)
    for block in kept.values():
        assert any(all(torch.equal(dict(block.named_parameters())[f"{n}.weight"],
                                   dict(b.named_parameters())[f"{n}.weight"]) for n in norms) for b in before)
