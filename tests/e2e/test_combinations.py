"""A prunekit output is a valid input of every method, so that methods chain: depth on width, width on depth,
sparsity on width, width on width (standard and per-layer widths), on tiny Llama and OPT models; each result
saves, reloads, and computes what the in-memory model computes. What cannot work is refused in
one line: merging blocks of different widths. Width search on per-layer widths equals its masked
input."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.errors import PrunekitError
from prunekit.methods import SLEBConfig, SLMConfig, SearchConfig, WandaConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.models.block_shapes import blocks_alike, full_width

from tests.helpers.models import VOCAB, plain_model


WIDTH = dict(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05,
             fitness_seqlen=32)


def _ids(n=4, length=48, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _chain(family, configs, layers=5):
    model = plain_model(family, layers=layers)
    for cfg in configs:
        model = prune(model, cfg, _ids(), progress=False).model
    return model


def _reloads_equal(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True).eval()
    x = _ids(2, 20, seed=3)
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, model(x).logits)
    return reloaded


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_depth_on_a_width_output_keeps_each_blocks_widths(family, tmp_path):
    width = _chain(family, [SearchConfig(**WIDTH)])
    widths = [(ModelAdapter(width).role(b, "k").out_features, ModelAdapter(width).role(b, "down").in_features)
              for b in ModelAdapter(width).layers]
    out = prune(width, SLEBConfig(remove_layers=2), _ids(), progress=False)
    removed = out.details["removed"]
    kept = [w for i, w in enumerate(widths) if i not in removed]
    assert any(0 < i < 4 for i in removed)       # a middle block went: later blocks' config entries must move
    reloaded = _reloads_equal(out.model, tmp_path)
    a = ModelAdapter(reloaded)
    assert [(a.role(b, "k").out_features, a.role(b, "down").in_features) for b in a.layers] == kept


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_width_on_a_depth_output(family, tmp_path):
    model = _chain(family, [SLMConfig(remove_layers=2), SearchConfig(**WIDTH)])
    assert ModelAdapter(model).num_layers == 3
    _reloads_equal(model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "opt"])
def test_sparsity_on_a_width_output(family, tmp_path):
    model = _chain(family, [SearchConfig(**WIDTH), WandaConfig(sparsity=0.5)])
    for _, lin in ModelAdapter(model).all_linears():
        rows, cols = lin.weight.shape            # per output row, half of its inputs (rounded down)
        assert ((lin.weight == 0).sum(1) == cols // 2).all()
    _reloads_equal(model, tmp_path)


@pytest.mark.parametrize("family", ["llama"])
def test_width_on_a_standard_width_output(family, tmp_path):
    """keep 0.95 prunes Llama's MLPs to one width and keeps every rotary pair: a standard checkpoint,
    which a second search takes like a dense model (OPT's attention units are single dims, so its
    0.95 already narrows attention: per-layer widths, refused below)."""
    first = _chain(family, [SearchConfig(keep=0.95, generations=0, band=0.05, fitness_seqlen=32)])
    assert full_width(ModelAdapter(first)) and not hasattr(first.config, "layer_head_dims")
    second = prune(first, SearchConfig(**WIDTH), _ids(), progress=False)
    block = lambda m: sum(lin.weight.numel() for _, lin in ModelAdapter(m).all_linears())
    assert block(second.model) == second.details["block_params_kept"]
    assert abs(block(second.model) / block(first) - 0.7) <= 0.05 + 1e-9
    _reloads_equal(second.model, tmp_path)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_width_on_a_per_layer_width_output_equals_its_masked_input(family, tmp_path):
    """The second search runs on per-layer widths (and, for Llama, kept rotary pairs that must keep
    their original frequencies): the smaller model computes what its masked input computes."""
    first = _chain(family, [SearchConfig(**WIDTH)])
    assert not full_width(ModelAdapter(first))
    block = lambda m: sum(lin.weight.numel() for _, lin in ModelAdapter(m).all_linears())
    before = block(first)
    second = prune(first, SearchConfig(**{**WIDTH, "keep": 0.8, "seed": 1}), _ids(), progress=False)
    assert second.details["block_params_dense"] == before
    assert block(second.model) == second.details["block_params_kept"]
    assert abs(block(second.model) / before - 0.8) <= 0.05 + 1e-9
    x = _ids(2, 20, seed=4)
    with torch.no_grad():
        assert torch.allclose(second.model(x).logits, first(x).logits, atol=1e-5)   # `first` is left masked
    _reloads_equal(second.model, tmp_path)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_merging_blocks_of_different_widths_is_refused_in_one_line(family):
    width = _chain(family, [SearchConfig(**WIDTH)])
    assert not blocks_alike(ModelAdapter(width))
    with pytest.raises(PrunekitError, match="^method slm does not support prunekit_.*different widths") as e:
        prune(width, SLMConfig(remove_layers=1), _ids(), progress=False)
    assert "\n" not in str(e.value)
