"""The adapter on tiny models of every family: the linears it lists, and unknown layouts refused
before any work in one line naming the supported ones."""
import pytest

from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import plain_model, unknown_model


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "mixtral"])
def test_unknown_families_are_refused_before_any_work(family):
    import prunekit
    model = unknown_model(family)
    model_type = model.config.model_type
    # no calibration given: the refusal must come first, naming the type and the supported ones
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), None, progress=False)
    line = str(err.value)
    assert "\n" not in line and f"unsupported model_type {model_type}:" in line
    assert all(t in line for t in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "opt"))


def test_adapter_lists_linears(family):
    adapter = ModelAdapter(plain_model(family))
    names = list(adapter.block_linears(adapter.layers[0]))
    assert len(names) == (6 if family == "opt" else 7)
    assert sum(1 for _ in adapter.all_linears()) == 3 * len(names)


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(PrunekitError, match="unsupported model_type gpt2: prunekit supports llama, mistral.*opt"):
        ModelAdapter(model)
