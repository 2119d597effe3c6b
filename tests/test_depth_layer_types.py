"""Depth pruning of models whose blocks differ by layer type (sliding-window and full attention,
other rotary bases): a candidate scored by the depth stack is what the rebuilt model computes,
and the rebuilt model keeps each block's layer type, reloads and generates with the KV cache."""
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.methods import ShortGPTConfig, SLMConfig
from prunekit.methods.depth.base import DepthState
from prunekit.methods.depth.rebuild import apply_plan
from prunekit.engine.stack import BlockStack

from .test_block_kwargs import _ids, adapter_for, rel_err
from .tiny_models import SLIDING, structured_model

MIXED = ["qwen2", "qwen3", "gemma2", "gemma3"]


def _final_hidden(model, ids):
    with torch.no_grad():
        return model(ids, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("family", MIXED)
def test_stack_candidates_compute_what_the_rebuilt_model_computes(family):
    model = structured_model(family, layers=6)
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
    model = structured_model(family, layers=6)
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
