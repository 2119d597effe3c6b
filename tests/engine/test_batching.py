"""Batched forwards (several windows per block call, the recorded batch-1 kwargs broadcast) and
device-resident activations give what one window at a time and offloaded activations give.

Tolerances: float32 on the CPU, a batched matmul may sum in another order than one row's, so
hidden states and logits agree within ATOL = 1e-4 (the values are O(1)); perplexity and KL
within a relative 1e-5."""
import math

import pytest
import torch

import prunekit
from prunekit.engine import BlockStack, BlockVisitor, LayerwiseEngine
from prunekit.errors import PrunekitError
from prunekit.eval.kl import kl_to_dense
from prunekit.eval.ppl import perplexity_of_ids
from prunekit.methods import SparseGPTConfig, WandaConfig
from prunekit.models import plumbing
from prunekit.models.adapter import ModelAdapter
from prunekit.models.plumbing import batching, keep_on_device, windows_per_call
from prunekit.scoring.fitness import DepthEvaluator

from tests.helpers.models import FAMILIES, NO_SDPA, VOCAB, WINDOW, tiny_model

ATOL = 1e-4
ATTENTIONS = [(f, a) for f in FAMILIES for a in ("eager", "sdpa") if not (a == "sdpa" and f in NO_SDPA)]


def _ids(n=5, seed=0, length=WINDOW):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _engine_logits(model, ids, **kw):
    engine = LayerwiseEngine(ModelAdapter(model), progress=False, **kw)
    return engine.head(engine.run(ids, BlockVisitor()).hidden)


@pytest.mark.parametrize("family,attn", ATTENTIONS)
def test_batched_engine_equals_one_window_and_the_models_own_forward(family, attn):
    """Every family with its sliding windows, layer types, rotary bases and per-layer arguments
    (Gemma 2/3 local and global, Qwen2/3 max_window_layers, Phi-3, OPT's learned positions): a
    batch of 3 over 5 windows (a short last batch) equals batch 1, and both the model's own
    batched forward, so the broadcast batch-1 kwargs are those of every window."""
    model = tiny_model(family, attn=attn)
    ids = _ids()
    one = _engine_logits(model, ids, batch=1)
    three = _engine_logits(model, ids, batch=3)
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
    assert one.shape == three.shape == ref.shape
    assert torch.allclose(three, one, atol=ATOL), (three - one).abs().max()
    assert torch.allclose(three, ref, atol=ATOL), (three - ref).abs().max()


def test_forward_block_calls_the_block_once_per_batch():
    model = tiny_model("llama")
    engine = LayerwiseEngine(ModelAdapter(model), progress=False, batch=2)
    inputs = engine.capture(_ids(5))
    sizes = []
    handle = model.model.layers[0].register_forward_pre_hook(lambda m, args, kw: sizes.append(args[0].shape[0])
                                                              if args else sizes.append(kw["hidden_states"].shape[0]),
                                                              with_kwargs=True)
    try:
        engine.forward_block(model.model.layers[0], inputs, index=0)
    finally:
        handle.remove()
    assert sizes == [2, 2, 1]


def test_batching_context_sets_the_engines_batch_and_an_explicit_one_wins():
    model = tiny_model("llama")
    engine = LayerwiseEngine(ModelAdapter(model), progress=False)
    block = model.model.layers[0]
    assert engine.batch_for(block, 5, WINDOW) == 1            # the CPU default
    with batching(4):
        assert engine.batch_for(block, 5, WINDOW) == 4
        assert engine.batch_for(block, 3, WINDOW) == 3        # never more than the windows
        assert LayerwiseEngine(ModelAdapter(model), batch=2).batch_for(block, 5, WINDOW) == 2
    assert engine.batch_for(block, 5, WINDOW) == 1
    with pytest.raises(PrunekitError, match="positive"):
        with batching(0):
            pass


@pytest.mark.parametrize("family", FAMILIES)
def test_wanda_masks_batched_equal_one_window(family):
    ids = _ids(6, seed=1)
    masks = []
    for batch in (1, 4):
        model = tiny_model(family)
        prunekit.prune(model, WandaConfig(sparsity=0.5), ids, progress=False, batch=batch)
        masks.append([lin.weight == 0 for _, lin in ModelAdapter(model).all_linears()])
    assert all(torch.equal(a, b) for a, b in zip(*masks))


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2", "phi3", "opt"])
def test_sparsegpt_weights_batched_within_tolerance(family):
    ids = _ids(6, seed=2)
    weights = []
    for batch in (1, 4):
        model = tiny_model(family)
        prunekit.prune(model, SparseGPTConfig(sparsity=0.5), ids, progress=False, batch=batch)
        weights.append([lin.weight.clone() for _, lin in ModelAdapter(model).all_linears()])
    for a, b in zip(*weights):
        # the Hessians differ in rounding only; the OBS updates then agree to float32 precision
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), (a - b).abs().max()
    zeros = [sum(int((w == 0).sum()) for w in ws) for ws in weights]
    assert zeros[0] == zeros[1]     # same sparsity (per-row top-k); which weight may differ at a tie only


@pytest.mark.parametrize("family", ["llama", "gemma2", "opt"])
def test_perplexity_and_kl_batched_equal_one_window(family):
    model, dense = tiny_model(family, seed=1), tiny_model(family, seed=2)
    ids = _ids(7, seed=3).flatten()
    one = perplexity_of_ids(model, ids, seqlen=WINDOW, progress=False, batch=1)
    three = perplexity_of_ids(model, ids, seqlen=WINDOW, progress=False, batch=3)
    assert one["windows"] == three["windows"] == 7
    assert math.isclose(one["ppl"], three["ppl"], rel_tol=1e-5)
    windows = ids.view(7, WINDOW)
    k1 = kl_to_dense(model, dense, windows, progress=False, batch=1)
    k3 = kl_to_dense(model, dense, windows, progress=False, batch=3)
    assert k1["tokens"] == k3["tokens"] == 7 * WINDOW
    assert k1["kl"] > 0 and math.isclose(k1["kl"], k3["kl"], rel_tol=1e-5)
    assert k1["top1_agreement"] == k3["top1_agreement"]


def test_depth_fitness_batched_equals_one_window():
    model = tiny_model("gemma2")     # soft-capped logits: the head's batch goes through cap_logits per window
    ids = _ids(5, seed=4)
    cands = [(0, 1, 0, 0, 0), (1, 0, 0, 1, 0)]
    scores = []
    for batch in (1, 3):
        for kind in ("kl", "ppl"):
            ev = DepthEvaluator(BlockStack(ModelAdapter(model), ids, batch=batch), kind, topk=0)
            scores.append(ev.score(cands, list(range(5))))
    for a, b in zip(scores[:2], scores[2:]):
        assert all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a, b)), (a, b)
    stack = BlockStack(ModelAdapter(model), ids, batch=3)
    assert (stack.batch, stack.head_batch) == (3, 3)


# ---- device residency ----

def test_resident_activations_equal_offloaded():
    """The two paths with the compute and offload devices both the CPU: activations that stay
    where they are computed (the rule's choice on the CPU) and activations explicitly offloaded."""
    model = tiny_model("gemma3")
    ids = _ids(4, seed=5)
    resident = LayerwiseEngine(ModelAdapter(model), progress=False, batch=2)
    offloaded = LayerwiseEngine(ModelAdapter(model), "cpu", offload_device="cpu", progress=False, batch=2)
    a = resident.run(ids, BlockVisitor()).hidden
    b = offloaded.run(ids, BlockVisitor()).hidden
    assert resident.resident and resident.auto_offload and not offloaded.auto_offload
    assert torch.equal(a, b)


def test_wanda_resident_equals_offloaded(monkeypatch):
    """A pruning run whose engine decides to offload (too little free memory) and one that keeps
    activations on the device (plenty): the same masks, and the decision was taken each way."""
    ids = _ids(4, seed=6)
    decisions, masks = [], []
    real_capture = LayerwiseEngine.capture

    def capture(self, input_ids):
        out = real_capture(self, input_ids)
        decisions.append(self.resident)
        return out

    monkeypatch.setattr(LayerwiseEngine, "capture", capture)
    for free in (1, 1 << 40):
        monkeypatch.setattr(plumbing, "free_device_memory", lambda device, free=free: free)
        model = tiny_model("qwen2")
        prunekit.prune(model, WandaConfig(sparsity=0.5), ids, progress=False, batch=2)
        masks.append([lin.weight == 0 for _, lin in ModelAdapter(model).all_linears()])
    assert decisions == [False, True]
    assert all(torch.equal(a, b) for a, b in zip(*masks))


def test_blocks_go_back_where_they_came_from():
    model = tiny_model("llama")
    engine = LayerwiseEngine(ModelAdapter(model), progress=False)
    engine.run(_ids(2), BlockVisitor())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_residency_rule(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(plumbing, "free_device_memory", lambda device: 10 * gib)
    # two copies of the activations plus the rest within 80% of the free memory
    assert keep_on_device("cuda", 3 * gib, 1.9 * gib)
    assert not keep_on_device("cuda", 3 * gib, 2.1 * gib)
    monkeypatch.setattr(plumbing, "free_device_memory", lambda device: None)
    assert keep_on_device("cpu", 1e15, 1e15)        # off CUDA activations stay where they are computed
    assert not keep_on_device("cuda", 1, 1)         # CUDA named but absent: offload


def test_batch_rule_on_cuda(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(plumbing, "free_device_memory", lambda device: 8 * gib)
    assert windows_per_call("cuda", 0.5 * gib) == 4           # a quarter of 8 GiB, 0.5 GiB a window
    assert windows_per_call("cuda", 1024) == plumbing.MAX_BATCH
    assert windows_per_call("cuda", 100 * gib) == 1
    assert windows_per_call("cuda", 1024, n=10) == 10
    with batching(3):
        assert windows_per_call("cuda", 1024) == 3             # a set batch wins over the rule
