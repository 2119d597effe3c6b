"""The layer-wise engine on tiny models of every family."""
import torch

from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def test_blockwise_forward_equals_model_forward(family):
    model = plain_model(family)
    ids = torch.randint(3, VOCAB, (3, 24))
    adapter = ModelAdapter(model)
    engine = LayerwiseEngine(adapter, progress=False)
    final = engine.run(ids, BlockVisitor())
    logits = engine.head(final.hidden)
    with torch.no_grad():
        ref = model(ids).logits
    assert torch.allclose(logits, ref, atol=1e-5), (logits - ref).abs().max()


def test_captured_kwargs_are_the_decoders(family):
    engine = LayerwiseEngine(ModelAdapter(plain_model(family)), progress=False)
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
    model = plain_model(family)
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
