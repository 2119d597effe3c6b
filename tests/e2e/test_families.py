"""Every method on every family, so that the README's support table is a promise: it either works (the saved model reloads with
from_pretrained, gives the in-memory model's logits and decodes with the KV cache as without) or
`prunekit.prune` refuses in one line naming the method, the family and why, before any work.
The family-specific checks (Gemma 2's soft-capping, Phi-3's fused matrices, Gemma's norms, sliced
sliding-window models) live beside the module they test; the README table's own checks in
tests/test_support_matrix.py."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from tests import support_matrix as sm
from tests.helpers.models import FAMILIES, LAYERS, SLIDING, WINDOW, tiny_model


# what the code refuses today; a change here must be a deliberate one (and the README regenerated)
REFUSED = {("search-llm", f) for f in ("gemma2", "gemma3")} | \
    {("evo-shape", f) for f in FAMILIES if f != "llama"}     # the DeciLM layout: Llama blocks, full attention


def _window_ids(n=4, length=WINDOW, seed=0):
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


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sm.METHODS)
def test_method_on_family_works_or_refuses_in_one_line(method, family, tmp_path):
    why = sm.refusal(method, family)
    assert (why is not None) == ((method, family) in REFUSED), why
    model = tiny_model(family)
    ids = _window_ids()
    if why is not None:
        with pytest.raises(PrunekitError) as err:
            prunekit.prune(model, sm.example(method), None if method == "magnitude" else ids, progress=False)
        line = str(err.value)
        assert line == why and "\n" not in line and method in line and family in line
        return
    dense_params = sum(p.numel() for p in model.parameters())
    res = prunekit.prune(model, sm.example(method), ids, progress=False)
    pruned = res.model
    adapter = ModelAdapter(pruned)
    if method in ("magnitude", "wanda", "sparsegpt", "sparsellm", "evo-sparsity", "owl"):
        total = sum(lin.weight.numel() for _, lin in adapter.all_linears())
        assert abs(_zeros(adapter) / total - 0.5) < 0.01
    elif method in ("search-llm", "evo-shape"):
        assert sum(p.numel() for p in pruned.parameters()) < dense_params
    else:
        assert adapter.num_layers == pruned.config.num_hidden_layers < LAYERS
    pruned.config.use_cache = True
    pruned.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True).eval()
    check = _window_ids(2, 2 * WINDOW, seed=1)       # longer than the sliding window
    with torch.no_grad():
        assert torch.allclose(reloaded(check).logits, pruned(check).logits, atol=1e-5)
    _decodes_alike(reloaded, check)
