"""The SparseLLM method: one iteration equals SparseGPT, both FFN forms give exact sparsity and
history, the layer restrictions; on a tiny Gemma model the FFN fit improves over iteration 1;
Phi-3's fused gate and up are seen as parts."""
import pytest
import torch

import prunekit
from prunekit import SparseGPTConfig, SparseLLMConfig
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, WINDOW, plain_model, tiny_model


def _window_ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def test_sparsellm_sees_phi3s_fused_gate_and_up_as_parts():
    """One iteration of SparseLLM is SparseGPT, fused matrices included (the parts are pruned row
    by row as the whole is); more iterations fit the FFN better."""
    ids = _window_ids(8)
    a, b = tiny_model("phi3"), tiny_model("phi3")
    prunekit.prune(a, prunekit.SparseLLMConfig(sparsity=0.5, iterations=1), ids, progress=False)
    prunekit.prune(b, prunekit.SparseGPTConfig(sparsity=0.5), ids, progress=False)
    for (name, la), (_, lb) in zip(ModelAdapter(a).all_linears(), ModelAdapter(b).all_linears()):
        assert torch.equal(la.weight, lb.weight), name
    adapter = ModelAdapter(a)
    assert adapter.role_rows("up") == ("mlp.gate_up_proj", slice(96, 192))
    assert adapter.role_rows("v") == ("self_attn.qkv_proj", slice(64 + 32, 64 + 64))
    res = prunekit.prune(tiny_model("phi3"), prunekit.SparseLLMConfig(sparsity=0.5, iterations=3), ids,
                         progress=False)
    hist = res.details["ffn_relative_error"]
    assert sum(v[-1] for v in hist.values()) < sum(v[0] for v in hist.values()), hist


def _ids(n=4, L=32):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fam", ["llama", "opt"])
@pytest.mark.parametrize("pattern,sparsity", [(None, 0.7), ("2:4", None)])
def test_one_iteration_equals_sparsegpt(fam, pattern, sparsity):
    a, b = plain_model(fam), plain_model(fam)
    prunekit.prune(a, SparseLLMConfig(sparsity=sparsity, pattern=pattern, iterations=1), _ids(), progress=False)
    prunekit.prune(b, SparseGPTConfig(sparsity=sparsity, pattern=pattern), _ids(), progress=False)
    for (n, la), (_, lb) in zip(ModelAdapter(a).all_linears(), ModelAdapter(b).all_linears()):
        assert torch.equal(la.weight, lb.weight), n


@pytest.mark.parametrize("fam", ["llama", "opt"])
def test_both_ffn_forms_give_exact_sparsity_and_history(fam):
    model = plain_model(fam)
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.75, iterations=3), _ids(), progress=False)
    for name, lin in ModelAdapter(model).all_linears():   # in_features <= blocksize: one block, exact count
        assert (lin.weight == 0).sum().item() == round(0.75 * lin.weight.numel()), name
    hist = res.details["ffn_relative_error"]
    assert sorted(hist) == ["0", "1", "2"] and all(len(v) == 3 for v in hist.values())
    model = plain_model(fam)
    res = prunekit.prune(model, SparseLLMConfig(pattern="1:4", iterations=2), _ids(), progress=False)
    for name, lin in ModelAdapter(model).all_linears():
        assert (torch.count_nonzero(lin.weight.reshape(lin.out_features, -1, 4), dim=-1) == 1).all(), name


def test_layers_restricts_pruning_to_first_half():
    model, ref = plain_model("llama"), plain_model("llama")
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.5, iterations=2, layers="first-half"), _ids(), progress=False)
    adapter, ref_adapter = ModelAdapter(model), ModelAdapter(ref)
    assert sorted(res.details["ffn_relative_error"]) == ["0"]          # 3 blocks: the first half is block 0
    for (n, a), (_, b) in zip(adapter.all_linears([1, 2]), ref_adapter.all_linears([1, 2])):
        assert torch.equal(a.weight, b.weight), n
    assert res.sparsity["overall"] == pytest.approx(0.5, abs=0.01)


def test_edges_rule_runs_one_iteration_there():
    model = plain_model("llama")   # 3 blocks: edges are 1, 1, 2
    res = prunekit.prune(model, SparseLLMConfig(sparsity=0.5, iterations=3, plain_blocks="edges"), _ids(), progress=False)
    assert [len(res.details["ffn_relative_error"][k]) for k in "012"] == [3, 1, 1]


def test_sparsellm_fits_gemma_ffns_better_than_one_iteration():
    ids = torch.randint(3, 300, (8, WINDOW), generator=torch.Generator().manual_seed(0))
    model = tiny_model("gemma2")
    res = prunekit.prune(model, prunekit.SparseLLMConfig(sparsity=0.5, iterations=3), ids, progress=False)
    hist = res.details["ffn_relative_error"]
    first = sum(v[0] for v in hist.values())
    last = sum(v[-1] for v in hist.values())
    assert last < first, hist
