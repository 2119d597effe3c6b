"""Every method on every family (issue 13): it either works (the saved model reloads with
from_pretrained, gives the in-memory model's logits and decodes with the KV cache as without) or
`prunekit.prune` refuses in one line naming the method, the family and why, before any work.
Plus what the new families need of the adapter: Gemma 2's logit soft-capping in the engine's head
and the depth stack's NLL, fused Phi-3 matrices pruned per output row, and the README table."""
import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.errors import PrunekitError
from prunekit.engine.stack import BlockStack
from prunekit.models.adapter import ModelAdapter

from . import support_matrix as sm
from .tiny_models import LAYERS, SLIDING, STRUCTURED_FAMILIES, WINDOW, structured_model

# what the code refuses today; a change here must be a deliberate one (and the README regenerated)
REFUSED = {("search", f) for f in ("gemma2", "gemma3")}


def _ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def _zeros(adapter):
    return sum(int((lin.weight == 0).sum()) for _, lin in adapter.all_linears())


def _decodes_alike(model, ids):
    x = ids[:1, :6]      # prompt + new tokens run past the sliding window
    kw = dict(attention_mask=torch.ones_like(x), max_new_tokens=2 * SLIDING, min_new_tokens=2 * SLIDING,
              do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(x, use_cache=True, **kw)
        uncached = model.generate(x, use_cache=False, **kw)
    assert cached.shape[1] == 6 + 2 * SLIDING
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", STRUCTURED_FAMILIES)
@pytest.mark.parametrize("method", sm.METHODS)
def test_method_on_family_works_or_refuses_in_one_line(method, family, tmp_path):
    why = sm.refusal(method, family)
    assert (why is not None) == ((method, family) in REFUSED), why
    model = structured_model(family)
    ids = _ids()
    if why is not None:
        with pytest.raises(PrunekitError) as err:
            prunekit.prune(model, sm.CONFIGS[method](), None if method == "magnitude" else ids, progress=False)
        line = str(err.value)
        assert line == why and "\n" not in line and method in line and family in line
        return
    dense_params = sum(p.numel() for p in model.parameters())
    res = prunekit.prune(model, sm.CONFIGS[method](), ids, progress=False)
    pruned = res.model
    adapter = ModelAdapter(pruned)
    if method in ("magnitude", "wanda", "sparsegpt", "sparsellm", "evo-sparsity", "owl"):
        total = sum(lin.weight.numel() for _, lin in adapter.all_linears())
        assert abs(_zeros(adapter) / total - 0.5) < 0.01
    elif method == "search":
        assert sum(p.numel() for p in pruned.parameters()) < dense_params
    else:
        assert adapter.num_layers == pruned.config.num_hidden_layers < LAYERS
    pruned.config.use_cache = True
    pruned.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True).eval()
    check = _ids(2, 2 * WINDOW, seed=1)       # longer than the sliding window
    with torch.no_grad():
        assert torch.allclose(reloaded(check).logits, pruned(check).logits, atol=1e-5)
    _decodes_alike(reloaded, check)


def test_gemma2_logits_are_soft_capped_by_the_engine_and_the_depth_stack():
    """Gemma 2's forward caps the logits after lm_head; the engine's head and the depth stack's
    NLL (what depth methods score) must do the same, or every score is of another model."""
    model = structured_model("gemma2")
    adapter = ModelAdapter(model)
    assert adapter.logit_softcap == 30.0
    ids = _ids(2)
    with torch.no_grad():
        own = model(ids).logits
        nll = F.cross_entropy(own[:, :-1].reshape(-1, own.shape[-1]), ids[:, 1:].reshape(-1)).item()
    engine = LayerwiseEngine(adapter, progress=False)
    logits = engine.head(engine.run(ids, BlockVisitor()).hidden)
    assert torch.allclose(logits, own, atol=1e-4)
    assert own.abs().max() < 30.0 and not torch.allclose(adapter.cap_logits(own * 10), own * 10)
    stack = BlockStack(adapter, ids)
    assert abs(stack.nll(stack.through(list(adapter.layers), stack.start.hidden)) - nll) < 1e-5
    uncapped = copy.deepcopy(model)
    uncapped.config.final_logit_softcapping = None
    with torch.no_grad():
        assert not torch.allclose(uncapped(ids).logits, own, atol=1e-3)   # the cap matters on this model


def test_wanda_prunes_phi3_fused_matrices_per_output_row():
    model = structured_model("phi3")
    prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), _ids(), progress=False)
    block = ModelAdapter(model).layers[0]
    for lin in (block.self_attn.qkv_proj, block.mlp.gate_up_proj):
        per_row = (lin.weight == 0).sum(dim=1)
        assert torch.equal(per_row, torch.full_like(per_row, lin.in_features // 2))


def test_gemma_depth_merge_keeps_the_base_blocks_four_norms_and_qk_norms():
    model = structured_model("gemma3")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    before = [copy.deepcopy(b) for b in ModelAdapter(model).layers]
    res = prunekit.prune(model, sm.CONFIGS["laco"](), _ids(), progress=False)
    adapter = ModelAdapter(res.model)
    kept = dict(zip(range(adapter.num_layers), adapter.layers))
    norms = adapter.spec.norms + adapter.spec.qk_norms
    assert len(norms) == 6
    # every block of the result carries exactly some original block's norms (a merge: its base's)
    for block in kept.values():
        assert any(all(torch.equal(dict(block.named_parameters())[f"{n}.weight"],
                                   dict(b.named_parameters())[f"{n}.weight"]) for n in norms) for b in before)


def test_readme_table_is_what_the_code_does():
    assert sm.main(["--check"]) == 0, "README support table is stale: run python -m tests.support_matrix"


@pytest.mark.parametrize("layout", ["standard", "uniform", "per-layer"])
@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "phi3"])
def test_sliced_sliding_window_and_qk_norm_models_compute_the_masked_model(family, layout, tmp_path):
    """Width outputs of models with sliding windows (all layers: Mistral, Phi-3; some: Qwen2, Qwen3),
    per-head q/k norms (Qwen3) and fused projections (Phi-3, sliced into separate ones): the sliced model, saved and reloaded, computes the masked dense
    model on a window longer than the sliding window, and decodes with the KV cache as without."""
    from prunekit.methods.width.slicing import DenseWeights, shape_of, sliced_model

    from .test_width_generation import LAYOUTS, _check_decoding, _genome
    model = structured_model(family)
    with torch.no_grad():     # q/k norm weights that are not all ones, so a wrong gather shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(1.0 if "norm" in name else 0.0, 0.3)
    adapter = ModelAdapter(model)
    types = adapter.layer_types
    shape = shape_of(adapter)
    genome = _genome(shape, *LAYOUTS[layout])
    small = sliced_model(model, genome, shape)
    # fused projections come apart in the variable-width code, even at one width
    assert type(small).__name__.startswith("Pruned") == (layout != "standard" or family == "phi3")
    assert ModelAdapter(small).layer_types == types[:genome.depth]
    ids = _ids(2, 3 * WINDOW, seed=1)
    logits = _check_decoding(small, ids)
    DenseWeights(adapter).apply(genome, shape)
    with torch.no_grad():
        assert torch.allclose(logits, model(ids).logits, atol=1e-5)
    small.save_pretrained(tmp_path / "w")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "w", trust_remote_code=True).eval()
    assert torch.allclose(_check_decoding(reloaded, ids), logits, atol=1e-5)
    if "sliding_attention" not in types[:genome.depth]:
        return      # Qwen2's first blocks are full-attention ones
    # the window matters on this model: the same weights with a window longer than the input differ
    wide = copy.deepcopy(small)
    wide.config.sliding_window = 10 * ids.shape[1]
    with torch.no_grad():
        assert not torch.allclose(wide(ids, use_cache=False).logits, logits, atol=1e-3)


def test_sparsellm_sees_phi3s_fused_gate_and_up_as_parts():
    """One iteration of SparseLLM is SparseGPT, fused matrices included (the parts are pruned row
    by row as the whole is); more iterations fit the FFN better."""
    ids = _ids(8)
    a, b = structured_model("phi3"), structured_model("phi3")
    prunekit.prune(a, prunekit.SparseLLMConfig(sparsity=0.5, iterations=1), ids, progress=False)
    prunekit.prune(b, prunekit.SparseGPTConfig(sparsity=0.5), ids, progress=False)
    for (name, la), (_, lb) in zip(ModelAdapter(a).all_linears(), ModelAdapter(b).all_linears()):
        assert torch.equal(la.weight, lb.weight), name
    adapter = ModelAdapter(a)
    assert adapter.role_rows("up") == ("mlp.gate_up_proj", slice(96, 192))
    assert adapter.role_rows("v") == ("self_attn.qkv_proj", slice(64 + 32, 64 + 64))
    res = prunekit.prune(structured_model("phi3"), prunekit.SparseLLMConfig(sparsity=0.5, iterations=3), ids,
                         progress=False)
    hist = res.details["ffn_relative_error"]
    assert sum(v[-1] for v in hist.values()) < sum(v[0] for v in hist.values()), hist
