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


class _Accumulator:
    """A factory whose evaluator adds 1 to its tensor in place per candidate and returns the sum,
    as evaluators that write candidates into model weights do (picklable)."""

    def __init__(self, n: int):
        import torch
        self.t = torch.zeros(n)

    def __call__(self):
        return self

    def score(self, candidates, windows):
        out = []
        for _ in candidates:
            self.t.add_(1)
            out.append(float(self.t.sum()))
        return out


def test_each_worker_writes_into_its_own_copy_never_the_callers():
    from prunekit.scoring.executors import make_executor
    factory = _Accumulator(8)
    executor = make_executor("local", 2, factory)
    try:
        scores = executor.score([0, 1, 2, 3], [0])
    finally:
        executor.close()
    # a worker's evaluator lives on between chunks, so a chunk starts where that worker left off
    assert scores[:2] == [8.0, 16.0] and scores[2:] in ([8.0, 16.0], [24.0, 32.0])
    assert float(factory.t.abs().sum()) == 0.0        # the caller's tensor is untouched
