"""Every block runs with exactly the arguments the model's own forward gives it (issue 13): the
engine's block-by-block outputs equal the model's hidden states for every family, on a window
longer than the sliding window, with mixed layer types; the depth stack keeps each block's own
arguments when candidates move blocks; unknown families are refused before any work.

`Layout` is a stand-in that gives the engine only what it asks of an adapter (the model, its
blocks, the modules around them): the replay test below uses it to show what a block computes
with another block's arguments."""
import pytest
import torch
import torch.nn as nn

from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from .tiny_models import ADAPTED_FAMILIES, NO_SDPA, STRUCTURED_FAMILIES, WINDOW, structured_model

LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class Layout:
    """What the engine and the depth stack use of an adapter, without the adapter's family table."""

    def __init__(self, model):
        self.model = model

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def pre_block_modules(self):
        return []          # everything runs on the CPU: nothing to move

    def final_modules(self):
        return [self.model.model.norm]

    def linear_names(self):
        return LLAMA_LINEARS   # Gemma's projections carry Llama's names (merges only)

    def replace_layers(self, blocks):
        ModelAdapter.replace_layers(self, blocks)


def adapter_for(model):
    family = model.config.model_type
    return ModelAdapter(model) if family in ADAPTED_FAMILIES else Layout(model)


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


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def _ids(n=2, seed=0):
    return torch.randint(3, 300, (n, WINDOW), generator=torch.Generator().manual_seed(seed))


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
@pytest.mark.parametrize("family", STRUCTURED_FAMILIES)
def test_engine_block_outputs_equal_the_models_own_forward(family, attn):
    if attn == "sdpa" and family in NO_SDPA:
        pytest.skip(f"transformers has no sdpa attention for {family}")
    model = structured_model(family, attn=attn)
    _check_structure(model)
    ids = _ids()
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
    model = structured_model("gemma3")
    ids = _ids()
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
    model = structured_model("gemma3", layers=6)
    types = model.config.layer_types
    kwargs = LayerwiseEngine(Layout(model), progress=False).capture(_ids()).kwargs
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
    model = structured_model("qwen2")
    adapter = ModelAdapter(model)
    ids = _ids()

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


def _unknown_model(family):
    """Tiny models of layouts prunekit does not describe: GPT-2, GPT-NeoX, a mixture of experts."""
    if family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
        return GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                                intermediate_size=64, vocab_size=50))
    from transformers import MixtralConfig, MixtralForCausalLM
    return MixtralForCausalLM(MixtralConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                            num_key_value_heads=1, intermediate_size=64, vocab_size=50,
                                            num_local_experts=2, num_experts_per_tok=1))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "mixtral"])
def test_unknown_families_are_refused_before_any_work(family):
    import prunekit
    model = _unknown_model(family)
    model_type = model.config.model_type
    # no calibration given: the refusal must come first, naming the type and the supported ones
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), None, progress=False)
    line = str(err.value)
    assert "\n" not in line and f"unsupported model_type {model_type}:" in line
    assert all(t in line for t in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "opt"))


def test_cli_refuses_an_unknown_family_in_one_line(tmp_path, tokenizer, data_dir, capsys):
    from prunekit.cli import main
    from .test_cli import _prune_args
    src, out = tmp_path / "tiny-neox", tmp_path / "out"
    _unknown_model("gpt_neox").save_pretrained(src)
    tokenizer.save_pretrained(src)
    capsys.readouterr()         # saving writes progress bars to stderr
    assert main(_prune_args(src, out, data_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsupported model_type gpt_neox" in err[0], err
    assert not out.exists()
