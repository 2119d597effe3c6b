"""Removal by sublayer (--unit sublayer): SLEB and PPL pick what brute force over the model's own
forward picks, ShortGPT's sublayer influence is the cosine measured around each sublayer, the
output is a DeciLM model computing the masked model, and --keep counts parameters exactly."""
import copy
import math

import pytest
import torch

from prunekit.api import prune
from prunekit.errors import ConfigError, PrunekitError
from prunekit.methods import PPLConfig, SLEBConfig, ShortGPTConfig
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model

OUT = {"attention": "self_attn.o_proj", "mlp": "mlp.down_proj"}
UNITS = [(i, p) for i in range(6) for p in ("attention", "mlp")]


def without(model, units):
    """A copy of the model whose listed sublayers write zeros (their output projections zeroed)."""
    m = copy.deepcopy(model)
    layers = ModelAdapter(m).layers
    with torch.no_grad():
        for i, part in units:
            lin = layers[i].get_submodule(OUT[part])
            lin.weight.zero_()
            if lin.bias is not None:
                lin.bias.zero_()
    return m


def nll(model, ids):
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()


@pytest.fixture(scope="module")
def setup():
    model = plain_model("llama", seed=3, layers=6)
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(4))
    return model, ids


def test_sleb_and_ppl_by_sublayer_pick_what_brute_force_picks(setup):
    model, ids = setup
    # SLEB: greedy over the units of blocks 1..4 (the first and last block are kept whole)
    candidates = [u for u in UNITS if 1 <= u[0] <= 4]
    first = min(candidates, key=lambda u: (nll(without(model, [u]), ids), u))
    second = min([u for u in candidates if u != first], key=lambda u: (nll(without(model, [first, u]), ids), u))
    res = prune(copy.deepcopy(model), SLEBConfig(remove_layers=2, unit="sublayer"), ids, progress=False)
    assert res.details["removed_units"] == [list(first), list(second)]
    # PPL without the heuristic: the two units of lowest single-removal perplexity, at once
    single = sorted(UNITS, key=lambda u: (nll(without(model, [u]), ids), u))[:2]
    res = prune(copy.deepcopy(model), PPLConfig(remove_layers=2, unit="sublayer", plus_heuristic=False), ids,
                progress=False)
    assert res.details["removed_units"] == [list(u) for u in single]
    key = f"{single[0][0]}.{single[0][1]}"
    assert res.details["calibration_ppl"][key] == pytest.approx(math.exp(nll(without(model, [single[0]]), ids)),
                                                                rel=1e-4)


def test_shortgpt_sublayer_influence_is_the_cosine_around_each_sublayer(setup):
    model, ids = setup
    seen = {}
    layers = ModelAdapter(model).layers
    hooks = [layers[i].self_attn.register_forward_hook(
        lambda m, inp, out, i=i: seen.__setitem__(("attn", i), out[0].detach())) for i in range(6)]
    hooks += [layers[i].register_forward_pre_hook(
        lambda m, args, kwargs, i=i: seen.__setitem__(("in", i), (args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True) for i in range(6)]
    with torch.no_grad():
        out = model(ids, use_cache=False, output_hidden_states=True)
    for h in hooks:
        h.remove()

    def bi(a, b):
        a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
        return (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean().item()
    res = prune(copy.deepcopy(model), ShortGPTConfig(remove_layers=3, unit="sublayer"), ids, progress=False)
    block_out = [seen[("in", i + 1)] for i in range(5)] + [out.hidden_states[-1]]
    for i in range(5):      # the last block's output is normed in hidden_states: blocks 0..4 are compared
        mid = seen[("in", i)] + seen[("attn", i)]
        assert res.details["block_influence"][f"{i}.attention"] == pytest.approx(bi(seen[("in", i)], mid), abs=1e-5)
        assert res.details["block_influence"][f"{i}.mlp"] == pytest.approx(bi(mid, block_out[i]), abs=1e-5)
    lowest = sorted(res.details["block_influence"].items(), key=lambda kv: (kv[1], kv[0]))[:3]
    assert sorted(f"{i}.{p}" for i, p in res.details["removed_units"]) == sorted(k for k, _ in lowest)


@pytest.mark.parametrize("config", [ShortGPTConfig(keep=0.7, unit="sublayer"), SLEBConfig(remove_layers=4, unit="sublayer")])
def test_output_computes_the_masked_model_and_counts_exactly(setup, config):
    model, ids = setup
    res = prune(copy.deepcopy(model), config, ids, progress=False)
    small = res.model
    removed = [tuple(u) for u in res.details["removed_units"]]
    assert torch.allclose(small(ids).logits, without(model, removed)(ids).logits, atol=1e-5)
    a = ModelAdapter(small)
    kept = sum(lin.weight.numel() for b in a.layers for lin in a.block_linears(b).values())
    d = res.details["depth"]
    assert kept == d["kept_params"]
    dense = sum(lin.weight.numel() for b in ModelAdapter(model).layers for lin in ModelAdapter(model).block_linears(b).values())
    assert d["block_params"] == dense
    if config.keep is not None:       # units go in order until the target is met, not one more
        assert kept <= config.keep * dense
    else:
        assert len(removed) == 4
    fully = {i for i, _ in removed if sum(j == i for j, _ in removed) == 2}
    assert small.config.num_hidden_layers == 6 - len(fully)


def test_blocks_that_lose_both_sublayers_are_a_standard_model(setup):
    model, ids = setup
    res = prune(copy.deepcopy(model), SLEBConfig(remove_layers=2), ids, progress=False)
    assert type(res.model).__name__ == "LlamaForCausalLM"


def test_sublayer_refusals():
    with pytest.raises(ConfigError, match="not both"):
        ShortGPTConfig(keep=0.8, remove_layers=2)
    with pytest.raises(ConfigError, match="outside"):
        ShortGPTConfig(keep=1.2)
    ids = torch.randint(0, VOCAB, (2, 16))
    with pytest.raises(ConfigError, match="cannot state this model"):
        prune(plain_model("opt"), ShortGPTConfig(remove_layers=1, unit="sublayer"), ids, progress=False)
    with pytest.raises(PrunekitError, match="at most 5"):
        prune(plain_model("llama"), ShortGPTConfig(remove_layers=6, unit="sublayer"), ids, progress=False)


def test_a_width_pruned_qwen3_keeps_its_qk_norms_by_refusing_the_layout():
    """A Qwen3 width output is in prunekit's layout with per-head q/k norms, which the DeciLM
    layout cannot state: removal by sublayer must refuse it rather than drop the norms."""
    from prunekit.methods.width.genome import Genome
    from prunekit.methods.width.slicing import shape_of, sliced_model
    ids = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    dense = plain_model("qwen3", layers=4)
    shape = shape_of(ModelAdapter(dense))
    mlp = [torch.arange(shape.intermediate) < w for w in (128, 96, 64, 96)]       # whole heads, MLPs differ
    genome = Genome([torch.ones(shape.kv_heads, shape.pairs, dtype=torch.bool)] * 4, mlp, 4)
    width = sliced_model(dense, genome, shape)
    assert width.config.model_type == "prunekit_llama" and width.config.qk_norm
    with pytest.raises(ConfigError, match="per-head q/k norms"):
        prune(width, ShortGPTConfig(remove_layers=1, unit="sublayer"), ids, progress=False)
