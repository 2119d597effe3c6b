"""SLM and LaCo: the sliding window and the collapse against reference loops, a threshold above one
merges nothing."""
import torch

from prunekit.api import prune
from prunekit.methods import SLMConfig
from prunekit.methods.depth.base import DepthState
from prunekit.methods.depth.slm import collapse, slide

from tests.helpers.models import VOCAB, plain_model


def deep_model(family="llama", layers=8, seed=0):
    return plain_model(family, seed, layers)


class _FakeState(DepthState):
    """A DepthState over dummy blocks, to test the loops' bookkeeping without a model."""
    def __init__(self, n):
        self.blocks, self.groups, self.log, self.rule = list(range(n)), [[i] for i in range(n)], [], "rdsc"

    def merge(self, lo, hi, **info):
        merged = [i for g in self.groups[lo:hi + 1] for i in g]
        self.blocks[lo:hi + 1] = [None]
        self.groups[lo:hi + 1] = [merged]
        self.log.append({"merged": merged, **info})


def test_slide_follows_the_reference_loop():
    # similarity passes iff the window's original span is within a "patch" {2..5} or {6..8}
    patches = [set(range(2, 6)), set(range(6, 9))]

    def sim(state, lo, hi):
        span = {i for g in state.groups[lo:hi + 1] for i in g}
        return 0.9 if any(span <= p for p in patches) else 0.1

    state = _FakeState(10)   # block 9 is protected; the first window is [7, 8]
    assert slide(state, 0.5, sim) == 2 + 3
    assert [e["merged"] for e in state.log] == [[6, 7, 8], [2, 3, 4, 5]]
    assert slide(_FakeState(10), 1.0, sim) == 0          # threshold above every similarity: no merge
    capped = _FakeState(10)
    assert slide(capped, 0.5, sim, cap=3) == 3            # stops at exactly the cap
    assert [e["merged"] for e in capped.log] == [[6, 7, 8], [4, 5]]


def test_slide_commits_a_window_that_reaches_block_zero():
    state = _FakeState(6)
    assert slide(state, 0.5, lambda s, lo, hi: 1.0) == 4
    assert state.groups == [[0, 1, 2, 3, 4], [5]]


def test_collapse_shrinks_its_last_window_to_hit_the_cap():
    state = _FakeState(12)
    assert collapse(state, 0.5, lambda s, lo, hi: 1.0, size=4, interval=2, cap=5) == 5
    # [7..10] first (3 go); then 2 jumps down a window of 3 current blocks, the merged one included
    assert [e["merged"] for e in state.log] == [[7, 8, 9, 10], [5, 6, 7, 8, 9, 10]]


def test_slm_with_a_threshold_above_one_merges_nothing_and_is_deterministic():
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))
    model = deep_model("llama", 8)
    prune(model, SLMConfig(threshold=1.01), ids, progress=False)
    assert model.config.num_hidden_layers == 8
    a, b = deep_model("llama", 8), deep_model("llama", 8)
    ra = prune(a, SLMConfig(threshold=0.5), ids, progress=False)
    rb = prune(b, SLMConfig(threshold=0.5), ids, progress=False)
    assert ra.details["depth"]["groups"] == rb.details["depth"]["groups"]
