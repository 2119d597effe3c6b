"""Where candidate fitness is computed: in this process (default), in N local processes
(spawned; each builds its own evaluator once from a picklable factory), or in N Ray actors
(`pip install prunekit[ray]`; joins the cluster in RAY_ADDRESS, else starts a local one limited
to the CPUs it needs). Candidates are split into contiguous chunks, one per worker, and the
scores are put back in candidate order, so the result does not depend on the executor.

An evaluator is any object with `score(candidates, windows) -> list[float]`; a factory is a
picklable zero-argument callable that builds one. Every worker gets its own copy of what the
factory holds (plain pickle), never memory shared with the caller or another worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import torch

from ..errors import PrunekitError
from ..models.plumbing import enclosing_batch, set_process_batch

EXECUTORS = ("local", "ray")


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering n items in at most `parts` nearly equal pieces."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        end = start + base + (p < extra)
        out.append((start, end))
        start = end
    return out


class InProcess:
    name = "in-process"

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def score(self, candidates: list, windows: list[int]) -> list[float]:
        return list(self.evaluator.score(candidates, windows))

    def close(self) -> None:
        pass


_WORKER_EVALUATOR = None


def private(factory: Callable) -> bytes:
    """The factory as plain pickle bytes, which copy its tensors. multiprocessing's own pickler
    (what a spawned process's arguments go through) moves tensors to shared memory instead, so
    evaluators that write candidates into the model's weights would write into the caller's
    model and into each other's: wrong scores, and a changed model, without an error."""
    return pickle.dumps(factory, protocol=pickle.HIGHEST_PROTOCOL)


def _init_worker(factory: bytes, threads: int, batch: int | None = None) -> None:
    global _WORKER_EVALUATOR
    torch.set_num_threads(threads)
    set_process_batch(batch)        # windows per call as in the caller, or a worker's scores could differ
    _WORKER_EVALUATOR = pickle.loads(factory)()


def _score_in_worker(candidates: list, windows: list[int]) -> list[float]:
    return list(_WORKER_EVALUATOR.score(candidates, windows))


class LocalProcesses:
    """`workers` spawned processes; each builds its evaluator once (the factory is pickled)."""

    def __init__(self, factory: Callable, workers: int, threads: int = 1):
        self.name = f"{workers} local processes"
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                        initargs=(private(factory), threads, enclosing_batch()))

    def score(self, candidates: list, windows: list[int]) -> list[float]:
        futures = [self.pool.submit(_score_in_worker, candidates[a:b], windows)
                   for a, b in chunks(len(candidates), self.workers)]
        return [s for f in futures for s in f.result()]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    def __init__(self, factory: bytes, threads: int, batch: int | None = None):
        torch.set_num_threads(threads)
        set_process_batch(batch)
        self.evaluator = pickle.loads(factory)()

    def score(self, candidates, windows):
        return list(self.evaluator.score(candidates, windows))


def ray_module():
    try:
        import ray
    except ImportError:
        raise PrunekitError("executor 'ray' needs ray: pip install prunekit[ray]") from None
    return ray


def _package_root() -> str:
    """The folder that holds this prunekit package (scoring/ is one level inside it)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RayActors:
    """`workers` Ray actors, each building its evaluator once from the factory in the object store."""

    def __init__(self, factory: Callable, workers: int, threads: int = 1):
        ray = self.ray = ray_module()
        self.started = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            # a local cluster gets exactly the CPUs the actors ask for, not the whole machine
            local = {} if address else {
                "num_cpus": workers * threads,
                # actors must import this prunekit, which need not be the installed one
                "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(
                    [_package_root()] + [p for p in [os.environ.get("PYTHONPATH")] if p])}}}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
            self.started = True
        self.name = f"{workers} ray actors" + (f" on {os.environ['RAY_ADDRESS']}" if os.environ.get("RAY_ADDRESS") else "")
        self.workers = workers
        actor = ray.remote(num_cpus=threads)(_RayWorker)
        ref = ray.put(private(factory))
        self.actors = [actor.remote(ref, threads, enclosing_batch()) for _ in range(workers)]

    def score(self, candidates: list, windows: list[int]) -> list[float]:
        parts = [self.actors[k].score.remote(candidates[a:b], windows)
                 for k, (a, b) in enumerate(chunks(len(candidates), self.workers))]
        return [s for part in self.ray.get(parts) for s in part]

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def make_executor(kind: str, workers: int, factory: Callable, local: Callable | None = None, threads: int = 1):
    """kind 'local' with workers <= 1: in this process (`local()` builds the evaluator, default
    the factory); 'local' with workers > 1: spawned processes; 'ray': Ray actors."""
    if kind not in EXECUTORS:
        raise PrunekitError(f"unknown executor '{kind}': choose {' or '.join(EXECUTORS)}")
    if workers < 1:
        raise PrunekitError(f"--workers must be at least 1 (got {workers})")
    if kind == "ray":
        return RayActors(factory, workers, threads)
    if workers == 1:
        return InProcess((local or factory)())
    return LocalProcesses(factory, workers, threads)
