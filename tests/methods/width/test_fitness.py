"""The width fitness: KL zero for the dense model and equal to a direct computation; perplexity."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.methods.width.fitness import width_evaluator
from prunekit.methods.width.genome import Space
from prunekit.methods.width.slicing import shape_of, sliced_model
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def _fitness_ids(n=6, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _space(shape, keep=0.7, multiple=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Space.build(shape, keep, [torch.rand(shape.kv_heads, shape.pairs, generator=g) for _ in range(shape.layers)],
                       [torch.rand(shape.intermediate, generator=g) for _ in range(shape.layers)], False,
                       multiple=multiple)


def _brute_kl(p_logits, q_logits):
    p, q = F.log_softmax(p_logits.double(), -1), F.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def test_kl_fitness_zero_for_dense_and_equals_direct_computation():
    model, ids = plain_model("llama"), _fitness_ids()
    dense_logits = model(ids).logits.detach()
    shape = shape_of(ModelAdapter(model))
    space = _space(shape)
    full = space.with_ratios([shape.pairs] * shape.layers, [shape.intermediate] * shape.layers, shape.layers)
    pruned = space.mutate(space.initial(0.7), 0.0, 1.0, 1.0, torch.Generator().manual_seed(1))
    small = sliced_model(copy.deepcopy(model), pruned, shape)       # the physically smaller model
    with torch.no_grad():
        small_logits = small(ids).logits
    ev = width_evaluator(model, ids, shape, "kl", topk=0)
    every, some = list(range(ids.shape[0])), [1, 4]
    assert ev.score([full], every) == [0.0]
    direct = float(_brute_kl(dense_logits, small_logits).mean())
    assert direct > 1e-3
    assert ev.score([pruned], every)[0] == pytest.approx(direct, rel=1e-4)
    assert ev.score([pruned], some)[0] == pytest.approx(float(_brute_kl(dense_logits[some], small_logits[some]).mean()),
                                                        rel=1e-4)
    assert ev.score([full], some)[0] == pytest.approx(0.0, abs=1e-7)
    ppl = width_evaluator(plain_model("llama"), ids, shape, "ppl")
    nll = F.cross_entropy(small_logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert ppl.score([pruned], every)[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)
