"""Every block runs with exactly the arguments the model's own forward gives it, so that a
block's sliding window, layer type and rotary base are its own and not block 0's: the engine's
block-by-block outputs equal the model's hidden states for every family, on a window longer than
the sliding window, with mixed layer types.

`Layout` (tests/helpers/blocks.py) is a stand-in that gives the engine only what it asks of an
adapter (the model, its blocks, the modules around them): the replay test below uses it to show
what a block computes with another block's arguments."""
import pytest
import torch

from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.models.adapter import ModelAdapter

from tests.helpers.blocks import Layout, adapter_for, rel_err, window_ids
from tests.helpers.models import FAMILIES, NO_SDPA, WINDOW, tiny_model


class BlockOutputs(BlockVisitor):
    """Records every block's raw output, window by window, during the statistics pass."""
    modifies = False

    def __init__(self):
        self.out = {}

    def observe(self, index, block):
        self.out[index] = []
        return {block: lambda inp, out: self.out[index].append(out[0] if isinstance(out, tuple) else out)}


def model_block_outputs(model, ids):
    """Each block's raw output from the model's own forward: hidden_states[i + 1] for all but the
    last block (hidden_states[-1] is after the final norm), a hook for the last."""
    layers = adapter_for(model).layers
    last = []
    h = layers[-1].register_forward_hook(lambda m, i, o: last.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            hs = [model(row.unsqueeze(0), output_hidden_states=True).hidden_states for row in ids]
    finally:
        h.remove()
    n = len(layers)
    per_block = [torch.cat([w[i + 1] for w in hs]) for i in range(n - 1)]
    return per_block + [torch.cat(last)]


def _check_structure(model):
    """The test must cover what it claims: a window longer than the sliding window, and mixed
    layer types where the family has them."""
    cfg = model.config
    if getattr(cfg, "sliding_window", None):
        assert cfg.sliding_window < WINDOW
    types = getattr(cfg, "layer_types", None)
    if cfg.model_type in ("qwen2", "qwen3", "gemma2", "gemma3_text"):
        assert len(set(types)) == 2, types


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_block_outputs_equal_the_models_own_forward(family, attn):
    if attn == "sdpa" and family in NO_SDPA:
        pytest.skip(f"transformers has no sdpa attention for {family}")
    model = tiny_model(family, attn=attn)
    _check_structure(model)
    ids = window_ids()
    rec = BlockOutputs()
    LayerwiseEngine(adapter_for(model), progress=False).run(ids, rec)
    expect = model_block_outputs(model, ids)
    assert len(rec.out) == len(expect)
    for i, ref in enumerate(expect):
        got = torch.cat(rec.out[i])
        assert rel_err(got, ref) < 1e-5, (i, rel_err(got, ref))


def test_replaying_block_0s_arguments_would_be_visibly_wrong_on_gemma3():
    """The test above can fail: with block 0's (sliding) arguments, Gemma 3's first full-attention
    block computes something else."""
    model = tiny_model("gemma3")
    ids = window_ids()
    engine = LayerwiseEngine(Layout(model), progress=False)
    inputs = engine.capture(ids)
    expect = model_block_outputs(model, ids)
    full = model.config.layer_types.index("full_attention")
    for i in range(full + 1):
        right = engine.forward_block(model.model.layers[i], inputs, index=i)
        wrong = engine.forward_block(model.model.layers[i], inputs, index=0)
        inputs.hidden = right
    assert rel_err(right, expect[full]) < 1e-5
    assert rel_err(wrong, expect[full]) > 1e-2


def test_blocks_of_one_layer_type_share_their_recorded_tensors():
    model = tiny_model("gemma3", layers=6)
    types = model.config.layer_types
    kwargs = LayerwiseEngine(Layout(model), progress=False).capture(window_ids()).kwargs
    for i in range(len(types)):
        for j in range(len(types)):
            same_pe = kwargs[i]["position_embeddings"][0] is kwargs[j]["position_embeddings"][0]
            same_mask = kwargs[i]["attention_mask"] is kwargs[j]["attention_mask"]
            assert same_pe == (types[i] == types[j]) and (types[i] != types[j] or same_mask)
    cos_s = kwargs[types.index("sliding_attention")]["position_embeddings"][0]
    cos_f = kwargs[types.index("full_attention")]["position_embeddings"][0]
    assert not torch.allclose(cos_s, cos_f)          # different rotary bases per type


def test_width_statistics_see_the_models_own_attention_inputs():
    """The visitors' hooks (what Wanda, SparseGPT and the width search collect) see per block what
    the model's own forward feeds that linear, on a model with mixed layer types."""
    model = tiny_model("qwen2")
    adapter = ModelAdapter(model)
    ids = window_ids()

    class OProjInputs(BlockVisitor):
        modifies = False
        seen = {}

        def observe(self, index, block):
            self.seen[index] = []
            return {block.self_attn.o_proj: lambda inp, out: self.seen[index].append(inp.clone())}

    rec = OProjInputs()
    LayerwiseEngine(adapter, progress=False).run(ids, rec)
    own = {i: [] for i in range(adapter.num_layers)}
    hooks = [b.self_attn.o_proj.register_forward_hook(lambda m, i, o, k=k: own[k].append(i[0].clone()))
             for k, b in enumerate(adapter.layers)]
    with torch.no_grad():
        for row in ids:
            model(row.unsqueeze(0))
    for h in hooks:
        h.remove()
    for i in own:
        assert rel_err(torch.cat(rec.seen[i]), torch.cat(own[i])) < 1e-5, i
