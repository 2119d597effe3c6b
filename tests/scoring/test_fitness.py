"""The depth KL fitness: zero for the dense model, equal to a direct computation, through the
model's own head."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.engine.stack import BlockStack
from prunekit.methods.depth.rebuild import apply_plan, groups_after_removal
from prunekit.models.adapter import ModelAdapter
from prunekit.scoring.fitness import DepthEvaluator

from tests.helpers.models import VOCAB, plain_model


def calib(n=8, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def brute_kl(p_logits, q_logits):
    p, q = F.log_softmax(p_logits.double(), -1), F.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


@pytest.fixture(scope="module")
def six_block():
    model = plain_model("llama", seed=0, layers=6)   # ShortGPT picks the second-best pair here
    return model, calib(8, 32, seed=1)


def test_kl_fitness_zero_for_dense_and_equals_direct_computation(six_block):
    model, ids = six_block
    ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0)
    windows = list(range(ids.shape[0]))
    assert ev.score([(0,) * 6], windows)[0] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        dense = model(ids, use_cache=False).logits
        small = copy.deepcopy(model)
        apply_plan(ModelAdapter(small), groups_after_removal(6, [1, 4]))
        cand = small(ids, use_cache=False).logits
    direct = float(brute_kl(dense, cand).mean())
    assert direct > 1e-3
    assert ev.score([(0, 1, 0, 0, 1, 0)], windows)[0] == pytest.approx(direct, rel=1e-4)
    sub = [1, 5, 6]
    assert ev.score([(0, 1, 0, 0, 1, 0)], sub)[0] == pytest.approx(float(brute_kl(dense[sub], cand[sub]).mean()),
                                                                   rel=1e-4)
    lean = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0, cache_bytes=1)   # block 0 only
    assert lean.stride > 6 and list(lean.inputs) == [0]
    assert lean.score([(0, 1, 0, 0, 1, 0)], sub) == pytest.approx(ev.score([(0, 1, 0, 0, 1, 0)], sub), rel=1e-6)
    ppl = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "ppl")
    nll = F.cross_entropy(cand[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert ppl.score([(0, 1, 0, 0, 1, 0)], windows)[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "opt"])
def test_kl_fitness_follows_the_models_own_head(family):
    """Gemma 2 soft-caps its logits and OPT projects after its final norm: the fitness must see
    what the model's forward gives."""
    from tests.helpers.models import tiny_model
    model = tiny_model(family, layers=4)
    ids = calib(4, 40, seed=2)
    ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0)
    ppl = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "ppl")
    with torch.no_grad():
        dense = model(ids, use_cache=False).logits
        small = copy.deepcopy(model)
        apply_plan(ModelAdapter(small), groups_after_removal(4, [2]))
        cand = small(ids, use_cache=False).logits
    windows = list(range(ids.shape[0]))
    assert ev.score([(0, 0, 1, 0)], windows)[0] == pytest.approx(float(brute_kl(dense, cand).mean()), rel=1e-4)
    nll = F.cross_entropy(cand[:, :-1].reshape(-1, cand.shape[-1]), ids[:, 1:].reshape(-1))
    assert ppl.score([(0, 0, 1, 0)], windows)[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_sublayer_candidates_score_the_model_with_those_sublayers_zeroed(six_block):
    """Units 2i and 2i + 1 are block i's attention and MLP: a candidate's KL is the dense model's
    against the model whose left-out sublayers write zeros (a block losing both is skipped)."""
    model, ids = six_block
    ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0, sublayers=True)
    windows = list(range(ids.shape[0]))
    cand = (0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0)       # attention of 1, all of 3, MLP of 4
    small = copy.deepcopy(model)
    layers = ModelAdapter(small).layers
    with torch.no_grad():
        for i, name in ((1, "self_attn.o_proj"), (3, "self_attn.o_proj"), (3, "mlp.down_proj"), (4, "mlp.down_proj")):
            layers[i].get_submodule(name).weight.zero_()
        dense = model(ids, use_cache=False).logits
        masked = small(ids, use_cache=False).logits
    assert ev.score([cand], windows)[0] == pytest.approx(float(brute_kl(dense, masked).mean()), rel=1e-4)
    assert ev.score([(0,) * 12], windows)[0] == pytest.approx(0.0, abs=1e-7)
    assert len(ev.block_influence) == 12
