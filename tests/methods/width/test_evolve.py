"""The width evolution: staged selection keeps the stated survivors, the search never returns worse
than its start on the fixed set."""
import zlib

import torch

from prunekit.methods.width.evolve import Plan, evolve_population as search
from prunekit.methods.width.genome import Shape, Space
from prunekit.solvers.evolution import draw_windows


def _space(shape, keep=0.7, multiple=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Space.build(shape, keep, [torch.rand(shape.kv_heads, shape.pairs, generator=g) for _ in range(shape.layers)],
                       [torch.rand(shape.intermediate, generator=g) for _ in range(shape.layers)], False,
                       multiple=multiple)


class _Recorder:
    """A fake executor: a deterministic score per (genome, windows), every scored pair logged."""
    name = "recorder"

    def __init__(self):
        self.log = []       # (genome key, windows, score)

    def score(self, genomes, windows):
        out = [zlib.crc32(g.key() + bytes(windows)) / 2**32 for g in genomes]
        self.log += [(g.key(), tuple(windows), s) for g, s in zip(genomes, out)]
        return out


def test_staged_selection_keeps_stated_survivors_on_the_width_path():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape)
    stages = [(64, 5), (96, 3)]          # 2 then 3 windows of 32 tokens; the last keeps top_k = 3
    plan = Plan(0.7, 0.05, 4, 8, 4, 2, 2, 3, 0, stages, fixed_windows=2, pool_windows=40, seqlen=32)
    rec = _Recorder()
    out = search(space, space.initial(0.7, 0.05), shape, plan, rec, progress=False)
    rows = out["history"][1:]
    assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        children, parents = (8, 0) if r["generation"] == 0 else (4 + 2 + 2, 3)
        s0, s1 = r["stages"]
        assert (s0["tokens"], s0["evaluated"], s0["survivors"]) == (64, children, 5)
        assert (s1["tokens"], s1["evaluated"], s1["survivors"]) == (96, 5 + parents, 3)
        # the last stage's pool: every genome scored on that generation's last-stage windows
        last = tuple(draw_windows(40, 96, 32, 0, r["generation"], 1))
        pool = {k: s for k, w, s in rec.log if w == last}
        assert len(pool) == 5 + parents and r["best"] == min(pool.values())
        first = tuple(draw_windows(40, 64, 32, 0, r["generation"], 0))
        assert len({k for k, w, _ in rec.log if w == first}) == children
    # the result: the lowest score on the fixed windows among the start and every generation's winner
    judged = {k: s for k, w, s in rec.log if w == (0, 1)}
    assert len(judged) >= 2 and out["initial_fitness"] == judged[space.initial(0.7, 0.05).key()]
    assert out["best"].key() == min(judged, key=judged.get)
    assert out["final_fitness"] == min(judged.values()) <= out["initial_fitness"]
    assert out["history"][-1]["fixed"] == out["final_fitness"]
    assert out["evaluations"] == len(rec.log) == len({(k, w) for k, w, _ in rec.log})   # nothing scored twice


class _Deceiver(_Recorder):
    """Random scores on drawn windows, but on the fixed set (windows 0 and 1) the start beats
    everything: whatever the minibatches pick, the search must return the start."""

    def __init__(self, start: bytes):
        super().__init__()
        self.start = start

    def score(self, genomes, windows):
        out = super().score(genomes, windows)
        if tuple(windows) == (0, 1):
            out = [0.5 if g.key() == self.start else 1.0 + s for g, s in zip(genomes, out)]
        return out


def test_width_search_never_returns_worse_than_its_start_on_the_fixed_set():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape)
    init = space.initial(0.7, 0.05)
    plan = Plan(0.7, 0.05, 3, 8, 4, 2, 2, 3, 0, [(64, 5), (96, 3)], fixed_windows=2, pool_windows=40, seqlen=32)
    rec = _Deceiver(init.key())
    out = search(space, init, shape, plan, rec, progress=False)
    last = tuple(draw_windows(40, 96, 32, 0, 3, 1))
    pool = {k: s for k, w, s in rec.log if w == last}
    assert min(pool, key=pool.get) != init.key()          # the last generation's winner is another genome
    assert len({k for k, w, _ in rec.log if w == (0, 1)}) >= 3       # winners were judged on the fixed set
    assert out["best"].key() == init.key()
    assert out["final_fitness"] == out["initial_fitness"] == 0.5
    assert all(r["fixed"] == 0.5 for r in out["history"])
