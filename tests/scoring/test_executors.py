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


class _BatchProbe:
    """An evaluator whose score is the windows-per-call rule where it runs (picklable factory)."""

    def __call__(self):
        return self

    def score(self, candidates, windows):
        from prunekit.models.plumbing import windows_per_call
        return [float(windows_per_call("cpu", 1.0, 1000)) for _ in candidates]


def test_worker_processes_run_the_callers_batch():
    from prunekit.models.plumbing import batching
    from prunekit.scoring.executors import make_executor
    for batch in (None, 3):
        with batching(batch):
            executor = make_executor("local", 2, _BatchProbe())
            try:
                # the rule off CUDA is one window per call; inside batching(3), three, in every worker
                assert executor.score([0, 1, 2], [0]) == [float(batch or 1)] * 3
            finally:
                executor.close()
