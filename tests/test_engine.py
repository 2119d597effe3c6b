"""The layer-wise engine and the adapter on tiny models of every family."""
import pytest
import torch
import torch.nn as nn

from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from .conftest import VOCAB, make_tiny_model


def test_blockwise_forward_equals_model_forward(family):
    model = make_tiny_model(family)
    ids = torch.randint(3, VOCAB, (3, 24))
    adapter = ModelAdapter(model)
    engine = LayerwiseEngine(adapter, progress=False)
    final = engine.run(ids, BlockVisitor())
    logits = engine.head(final.hidden)
    with torch.no_grad():
        ref = model(ids).logits
    assert torch.allclose(logits, ref, atol=1e-5), (logits - ref).abs().max()


def test_captured_kwargs_are_the_decoders(family):
    engine = LayerwiseEngine(ModelAdapter(make_tiny_model(family)), progress=False)
    inputs = engine.capture(torch.randint(3, VOCAB, (2, 16)))
    assert inputs.hidden.shape == (2, 16, 64)
    if family != "opt":   # rotary models pass the (cos, sin) pair from the model level
        cos, sin = inputs.kwargs[0]["position_embeddings"]
        assert cos.shape[-2] == 16
    assert len(inputs.kwargs) == 3 and all(k["use_cache"] is False for k in inputs.kwargs)


class _Recorder(BlockVisitor):
    """Records what the hooked q/k/v input is in each block, and zeroes block 1's MLP output."""

    def __init__(self, adapter):
        self.adapter, self.seen = adapter, {}

    def observe(self, index, block):
        lin = self.adapter.block_linears(block)[self.adapter.spec.attn_in[0]]
        self.seen[index] = []
        return {lin: lambda inp, out: self.seen[index].append(inp.detach().clone())}

    def edit(self, index, block):
        if index == 1:
            with torch.no_grad():
                self.adapter.block_linears(block)[self.adapter.spec.mlp_out[0]].weight.zero_()
                if self.adapter.block_linears(block)[self.adapter.spec.mlp_out[0]].bias is not None:
                    self.adapter.block_linears(block)[self.adapter.spec.mlp_out[0]].bias.zero_()


def test_later_blocks_see_inputs_propagated_through_edited_blocks(family):
    model = make_tiny_model(family)
    adapter = ModelAdapter(model)
    ids = torch.randint(3, VOCAB, (2, 12))
    rec = _Recorder(adapter)
    LayerwiseEngine(adapter, progress=False).run(ids, rec)
    # after the engine, block 1 has a zero MLP; the model's own forward now shows what block 2 must have seen
    seen_now = []
    lin = adapter.block_linears(adapter.layers[2])[adapter.spec.attn_in[0]]
    h = lin.register_forward_hook(lambda m, i, o: seen_now.append(i[0].detach().clone()))
    with torch.no_grad():
        for row in ids:
            model(row.unsqueeze(0))
    h.remove()
    assert len(rec.seen[2]) == 2
    for a, b in zip(rec.seen[2], seen_now):
        assert torch.allclose(a, b, atol=1e-5)


def test_adapter_lists_linears(family):
    adapter = ModelAdapter(make_tiny_model(family))
    names = list(adapter.block_linears(adapter.layers[0]))
    assert len(names) == (6 if family == "opt" else 7)
    assert sum(1 for _ in adapter.all_linears()) == 3 * len(names)


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(PrunekitError, match="unsupported model_type gpt2: prunekit supports llama, mistral.*opt"):
        ModelAdapter(model)
