"""evo-depth on a six-block model: the brute-force optimum, no worse than ShortGPT."""
from __future__ import annotations

import copy
import itertools

import pytest

from prunekit.engine.stack import BlockStack
from prunekit.methods.depth.base import DepthState
from prunekit.models.adapter import ModelAdapter
from prunekit.scoring.fitness import DepthEvaluator
from prunekit.solvers.evolution import FIXED, draw_windows

from tests.helpers.evo import run_evo_depth, six_block_model


@pytest.fixture(scope="module")
def six_block():
    return six_block_model()


def test_evo_depth_finds_brute_force_optimum(six_block):
    model, ids = six_block
    model = copy.deepcopy(model)
    ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0)
    windows = list(range(ids.shape[0]))
    subsets = list(itertools.combinations(range(6), 2))
    scores = ev.score([tuple(int(i in s) for i in range(6)) for s in subsets], windows)
    optimum = list(subsets[min(range(len(subsets)), key=scores.__getitem__)])
    from prunekit.methods.depth import ShortGPT, ShortGPTConfig
    sg = ShortGPT(ShortGPTConfig(remove_layers=2), ModelAdapter(copy.deepcopy(model)))
    sg.search(BlockStack(sg.adapter, ids), DepthState(sg.adapter), progress=False)
    details = run_evo_depth(model, ids, remove_layers=2, stages="64:3,256:1", generations=8, offspring=6,
                            kl_topk=0)
    assert details["shortgpt_removed"] == sg.details["removed"]          # the search starts from ShortGPT
    assert details["shortgpt_removed"] != optimum                         # ... which is not optimal here
    assert details["removed"] == optimum
    assert details["final_fitness"] == pytest.approx(min(scores), rel=1e-6)
    assert details["final_fitness"] < details["initial_fitness"]
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4


def test_evo_depth_returns_no_worse_than_shortgpt_on_the_fixed_windows(six_block):
    """Stages of one and two 32-token windows: with this seed the search ends on a parent that is
    worse than ShortGPT's choice on the fixed windows (the last parent alone gives 0.0917 against
    0.0820); the method must return its best there instead, and report that figure."""
    model, ids = six_block
    details = run_evo_depth(copy.deepcopy(model), ids, remove_layers=2, stages="32:2,64:1", generations=6,
                            offspring=4, kl_topk=0, seed=2)
    assert any(r["changed"] for r in details["history"])
    assert details["final_fitness"] <= details["initial_fitness"]
    fixed = draw_windows(ids.shape[0], 64, ids.shape[1], 2, FIXED, 1)
    assert details["fitness_tokens"] == len(fixed) * ids.shape[1]
    ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids), "kl", topk=0)
    as_genome = lambda removed: tuple(int(i in removed) for i in range(6))
    start, best = ev.score([as_genome(details["shortgpt_removed"]), as_genome(details["removed"])], fixed)
    assert (details["initial_fitness"], details["final_fitness"]) == pytest.approx((start, best), rel=1e-6)
    assert details["history"][-1]["fixed"] == details["final_fitness"]
    assert details["fixed_evaluations"] >= 2


def test_evo_depth_by_sublayer_removes_k_units_and_keeps_the_best_on_the_fixed_set():
    """evo-depth --unit sublayer: exactly k sublayers go, the output computes the masked model, and
    the search's best is no worse than its ShortGPT start on the fixed set."""
    import copy
    import torch
    from prunekit.api import prune
    from prunekit.methods import EvoDepthConfig
    from prunekit.models.adapter import ModelAdapter
    from tests.helpers.models import VOCAB, plain_model
    model = plain_model("llama", seed=5, layers=4)
    ids = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    res = prune(copy.deepcopy(model), EvoDepthConfig(remove_layers=3, unit="sublayer", stages="32:2,64:1",
                                                     generations=4, offspring=3), ids, progress=False)
    removed = res.details["removed_units"]
    assert len(removed) == 3 and res.details["final_fitness"] <= res.details["initial_fitness"]
    masked = copy.deepcopy(model)
    layers = ModelAdapter(masked).layers
    with torch.no_grad():
        for i, part in removed:
            layers[i].get_submodule("self_attn.o_proj" if part == "attention" else "mlp.down_proj").weight.zero_()
    assert torch.allclose(res.model(ids).logits, masked(ids).logits, atol=1e-5)
