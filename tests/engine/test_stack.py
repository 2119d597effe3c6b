"""The depth stack: its final hidden state is the model's; Gemma 2's logits are soft-capped by the
engine and the stack alike."""
import copy

import torch
import torch.nn.functional as F

from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.engine.stack import BlockStack
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, WINDOW, plain_model, tiny_model


def deep_model(family="llama", layers=8, seed=0):
    return plain_model(family, seed, layers)


def test_stack_final_hidden_matches_the_model():
    model = deep_model("qwen2", 4)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
    stack = BlockStack(ModelAdapter(model), ids)
    states = stack.all_inputs(list(ModelAdapter(model).layers))
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(stack.final_hidden(states[-1]), ref, atol=1e-5)


def _window_ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def test_gemma2_logits_are_soft_capped_by_the_engine_and_the_depth_stack():
    """Gemma 2's forward caps the logits after lm_head; the engine's head and the depth stack's
    NLL (what depth methods score) must do the same, or every score is of another model."""
    model = tiny_model("gemma2")
    adapter = ModelAdapter(model)
    assert adapter.logit_softcap == 30.0
    ids = _window_ids(2)
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
