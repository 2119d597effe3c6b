"""The counted removals: each removes exactly k blocks, SLEB and PPL pick what brute force picks,
ShortGPT removes the lowest block influence."""
import copy
import math

import pytest
import torch

from prunekit.api import prune
from prunekit.methods import LaCoConfig, PPLConfig, SLEBConfig, SLMConfig, ShortGPTConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.solvers.similarity import block_influence

from tests.helpers.models import VOCAB, plain_model


def deep_model(family="llama", layers=8, seed=0):
    return plain_model(family, seed, layers)


@pytest.mark.parametrize("config", [SLMConfig(remove_layers=3), SLMConfig(remove_layers=2, merge="top"),
                                    LaCoConfig(remove_layers=3), SLMConfig(ratio=0.5), LaCoConfig(remove_layers=5)])
def test_count_methods_remove_exactly_k_blocks(config):
    model = deep_model("llama", 8)
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))
    res = prune(model, config, ids, progress=False)
    k = config.target(8)
    assert model.config.num_hidden_layers == 8 - k == len(ModelAdapter(model).layers)
    assert res.details["depth"]["layers_removed"] == k
    assert sorted(i for g in res.details["depth"]["groups"] for i in g) == list(range(8))  # merges keep coverage
    assert res.details["depth"]["groups"][-1] == [7]      # the last block is protected


def _nll_without(model, ids, removed):
    m = copy.deepcopy(model)
    layers = ModelAdapter(m).layers
    for i in sorted(removed, reverse=True):
        del layers[i]
    with torch.no_grad():
        logits = m(ids, use_cache=False).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()


def test_sleb_and_ppl_pick_what_brute_force_picks():
    model = deep_model("llama", 7)
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(2))
    # SLEB round 1: among blocks 1..5, the one whose removal gives the lowest NLL; round 2 on top of it
    first = min(range(1, 6), key=lambda i: _nll_without(model, ids, [i]))
    rest = [i for i in range(1, 6) if i != first]
    second = min(rest, key=lambda i: _nll_without(model, ids, [first, i]))
    sleb = copy.deepcopy(model)
    res = prune(sleb, SLEBConfig(remove_layers=2), ids, progress=False)
    assert res.details["removed"] == sorted([first, second])
    # PPL without the plus heuristic: the two blocks of lowest single-removal NLL, in one shot
    single = sorted(range(7), key=lambda i: _nll_without(model, ids, [i]))[:2]
    ppl = copy.deepcopy(model)
    res = prune(ppl, PPLConfig(remove_layers=2, plus_heuristic=False), ids, progress=False)
    assert res.details["removed"] == sorted(single)
    assert res.details["calibration_ppl"][str(single[0])] == pytest.approx(math.exp(_nll_without(model, ids, [single[0]])), rel=1e-4)


def test_shortgpt_removes_the_lowest_block_influence():
    model = deep_model("llama", 6)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states   # entry i: block i's input (last is normed)
    bi = [block_influence(hs[i], hs[i + 1]) for i in range(5)]
    res = prune(model, ShortGPTConfig(remove_layers=2), ids, progress=False)
    assert res.details["block_influence"][:5] == pytest.approx(bi, abs=1e-6)
    assert res.details["removed"] == sorted(sorted(range(6), key=lambda i: res.details["block_influence"][i])[:2])
