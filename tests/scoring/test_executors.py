"""The executors give identical search results."""
from __future__ import annotations

import copy

import pytest

from tests.helpers.evo import run_evo_depth, six_block_model


@pytest.fixture(scope="module")
def six_block():
    return six_block_model()


@pytest.mark.slow
def test_executors_give_identical_results(six_block):
    model, ids = six_block
    kw = dict(remove_layers=2, stages="64:3,128:1", generations=3, offspring=4, kl_topk=0)
    runs = {"in-process": run_evo_depth(copy.deepcopy(model), ids, **kw),
            "workers=2": run_evo_depth(copy.deepcopy(model), ids, workers=2, **kw)}
    try:
        import ray  # noqa: F401
        runs["ray"] = run_evo_depth(copy.deepcopy(model), ids, executor="ray", workers=2, **kw)
    except ImportError:
        pass
    ref = runs["in-process"]
    assert ref["evaluations"] > 0
    for name, d in runs.items():
        assert d["removed"] == ref["removed"], name
        assert d["history"] == ref["history"], name
        assert d["final_fitness"] == ref["final_fitness"], name
    if "ray" not in runs:
        pytest.skip("ray is not installed: in-process and workers=2 agree; ray not compared")
