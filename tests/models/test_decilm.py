"""The Nemotron-NAS (DeciLM) layout: a model built from block shapes computes what the dense model
with those parts zeroed computes, the saved folder loads through its shipped code with the same
logits (cached decode equal to uncached), and its config states every block's weights the way the
serving engines read it."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from prunekit.errors import PrunekitError
from prunekit.models import decilm
from prunekit.models.adapter import ModelAdapter
from prunekit.models.decilm import BlockShape, to_decilm

from tests.helpers.models import tiny_model

# block 0 without attention (the cache slots then start at block 1), an attention-only block, one KV
# head instead of two, an MLP of its own width, an MLP on the 256 grid
SHAPES = [BlockShape(0, 96), BlockShape(2, 0), BlockShape(1, 96), BlockShape(2, 40), BlockShape(2, 256)]


def masked_reference(model, shapes):
    """The dense model with each left-out part's output projection zeroed and the other parts cut
    by hand: KV heads merged by repeating the kept ones is not a masking, so shapes with fewer KV
    heads copy the first head of each group into the others."""
    a = ModelAdapter(model)
    hd = a.dim("head_dim")
    with torch.no_grad():
        for block, s in zip(a.layers, shapes):
            if s.kv_heads == 0:
                for t in (block.self_attn.o_proj.weight, block.self_attn.o_proj.bias):
                    if t is not None:
                        t.zero_()
            elif s.kv_heads < a.dim("kv_heads"):
                for lin in (block.self_attn.k_proj, block.self_attn.v_proj):
                    for t in (lin.weight, lin.bias):
                        if t is not None:
                            rows = t.reshape(a.dim("kv_heads"), hd, *t.shape[1:])
                            rows[:] = rows[:s.kv_heads].repeat_interleave(a.dim("kv_heads") // s.kv_heads, 0)
            if s.mlp == 0:
                block.mlp.down_proj.weight.zero_()
            elif s.mlp < block.mlp.down_proj.in_features:
                block.mlp.down_proj.weight[:, s.mlp:] = 0
    return model


def cut_blocks(model, shapes):
    """The dense blocks with rows and columns cut to the shapes (what a method would hand over)."""
    a = ModelAdapter(model)
    hd = a.dim("head_dim")
    blocks = []
    for block, s in zip(a.layers, shapes):
        import copy
        b = copy.deepcopy(block)
        if s.kv_heads and s.kv_heads < a.dim("kv_heads"):
            for name in ("k_proj", "v_proj"):
                old = getattr(b.self_attn, name)
                new = torch.nn.Linear(old.in_features, s.kv_heads * hd, bias=old.bias is not None)
                new.weight.data = old.weight.data[:s.kv_heads * hd].clone()
                if old.bias is not None:
                    new.bias.data = old.bias.data[:s.kv_heads * hd].clone()
                setattr(b.self_attn, name, new)
        if s.mlp and s.mlp < b.mlp.down_proj.in_features:
            for name in ("gate_proj", "up_proj"):
                old = getattr(b.mlp, name)
                new = torch.nn.Linear(old.in_features, s.mlp, bias=False)
                new.weight.data = old.weight.data[:s.mlp].clone()
                setattr(b.mlp, name, new)
            old = b.mlp.down_proj
            new = torch.nn.Linear(s.mlp, old.out_features, bias=False)
            new.weight.data = old.weight.data[:, :s.mlp].clone()
            b.mlp.down_proj = new
        blocks.append(b)
    return blocks


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_decilm_model_computes_the_masked_dense_model(family, tmp_path):
    model = tiny_model(family, len(SHAPES), windowed=False, intermediate=256)
    ids = torch.randint(0, 200, (2, 14), generator=torch.Generator().manual_seed(0))
    small = to_decilm(ModelAdapter(model), cut_blocks(model, SHAPES), SHAPES)
    reference = masked_reference(model, SHAPES)(ids).logits
    assert torch.allclose(small(ids).logits, reference, atol=1e-5)
    small.save_pretrained(tmp_path)
    assert {"configuration_decilm.py", "modeling_decilm.py"} <= {p.name for p in tmp_path.iterdir()}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "DeciLMForCausalLM"
    assert torch.equal(loaded(ids).logits, small(ids).logits)
    # cached decode equals uncached, with block 0 holding no cache slot
    prompt = ids[:1, :6]
    cached = loaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = loaded.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def engine_reader(folder):
    """Each block's (KV heads, MLP width) derived the way vLLM's DeciLM class and llama.cpp's DECI
    converter read the config (written here from their documented key paths, not from prunekit):
    the config class loaded with trust_remote_code, entries read by attribute, KV heads
    num_attention_heads // n_heads_in_group, the width from ffn_mult when the entry has that
    attribute (int(2·m·hidden/3) rounded up to 256), otherwise intermediate_size."""
    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    out = []
    for block in cfg.block_configs:
        kv = 0 if block.attention.no_op else cfg.num_attention_heads // block.attention.n_heads_in_group
        if block.ffn.no_op:
            width = 0
        elif hasattr(block.ffn, "ffn_mult"):
            w = int(2 * block.ffn.ffn_mult * cfg.hidden_size / 3)
            width = w if w % 256 == 0 else w + 256 - w % 256
        else:
            width = block.ffn.intermediate_size
        out.append((kv, width))
    return out


def test_saved_config_states_each_blocks_weights(tmp_path):
    model = tiny_model("llama", len(SHAPES), windowed=False, intermediate=256)
    small = to_decilm(ModelAdapter(model), cut_blocks(model, SHAPES), SHAPES)
    small.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    hd = model.config.head_dim
    for i, (kv, width) in enumerate(engine_reader(tmp_path)):
        assert (kv, width) == (SHAPES[i].kv_heads, SHAPES[i].mlp)
        key = f"model.layers.{i}."
        if kv:
            assert weights[key + "self_attn.k_proj.weight"].shape[0] == kv * hd
            assert weights[key + "self_attn.q_proj.weight"].shape[0] == model.config.num_attention_heads * hd
        else:
            assert not any(k.startswith(key + "self_attn") or k.startswith(key + "input_layernorm") for k in weights)
        if width:
            assert weights[key + "mlp.down_proj.weight"].shape[1] == width
        else:
            assert not any(k.startswith(key + "mlp") or k.startswith(key + "post_attention") for k in weights)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"] and config["model_type"] == "nemotron-nas"
    ffn = [b["ffn"] for b in config["block_configs"]]
    assert isinstance(ffn[4]["ffn_mult"], float)            # on the grid: both engines read it exactly
    assert "ffn_mult" not in ffn[3]                          # off the grid: vLLM's intermediate_size only
    assert ffn[1]["ffn_mult"] is None and ffn[1]["no_op"]    # llama.cpp needs the key on a no-op MLP


def test_serving_line_names_what_llamacpp_cannot_run(tmp_path):
    from prunekit.models.serving import llamacpp_obstacles, servable
    model = tiny_model("llama", len(SHAPES), windowed=False, intermediate=256)
    config = to_decilm(ModelAdapter(model), cut_blocks(model, SHAPES), SHAPES).config.to_dict()
    why = " ".join(llamacpp_obstacles(config))
    assert "grid in blocks [0, 2, 3]" in why and "blocks [1] keep attention" in why and "block 0 has no attention" in why
    assert "llama.cpp (DECI)" not in servable(config)["engines"]
    full = [BlockShape(2, 256), BlockShape(0, 256), BlockShape(1, 256), BlockShape(2, 256), BlockShape(2, 256)]
    config = to_decilm(ModelAdapter(model), cut_blocks(model, full), full).config.to_dict()
    assert llamacpp_obstacles(config) == [] and "llama.cpp (DECI)" in servable(config)["engines"]


@pytest.mark.parametrize("family,reason", [("opt", "not Llama-layout"), ("gemma3", "not Llama-layout"),
                                           ("qwen3", "not Llama-layout"), ("phi3", "not Llama-layout"),
                                           ("mistral", "sliding-window")])
def test_shapes_the_layout_cannot_state_are_refused(family, reason):
    model = tiny_model(family, 2)
    assert reason in decilm.why_not(ModelAdapter(model))
    with pytest.raises(PrunekitError, match=reason):
        decilm.empty_decilm(ModelAdapter(model), [BlockShape(0, 96), BlockShape(2, 96)])


def test_an_empty_block_or_a_kv_count_that_does_not_divide_is_refused():
    model = tiny_model("llama", 2, windowed=False)
    with pytest.raises(PrunekitError, match="neither attention nor MLP"):
        decilm.empty_decilm(ModelAdapter(model), [BlockShape(0, 0), BlockShape(2, 96)])
    with pytest.raises(PrunekitError, match="do not divide"):
        decilm.empty_decilm(ModelAdapter(model), [BlockShape(3, 96), BlockShape(2, 96)])


def test_standard_layouts_name_the_engines_that_have_the_architecture():
    from prunekit.models.serving import servable
    assert servable({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})["engines"] == \
        ["vLLM", "llama.cpp", "transformers"]
    assert "llama.cpp" not in servable({"model_type": "opt", "architectures": ["OPTForCausalLM"]})["engines"]
    sparse = servable({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, sparsity=0.5)
    assert "no serving engine runs them faster" in sparse["notes"][0]
    assert servable({"model_type": "prunekit_llama"})["engines"] == ["transformers (trust_remote_code)"]
