"""evo-shape's refined library (--refine-steps, local distillation of every variant): each
recorded error equals the error of the stored variant recomputed on the dense model's own block
inputs of the held-out windows (so the masked rows stayed zero and the merged K/V copies stayed tied), training never made
a variant worse than its closed form, the model is left dense, and a refined candidate computes
what its saved DeciLM model computes."""
import copy

import pytest
import torch

from prunekit.api import prune
from prunekit.methods import EvoShapeConfig
from prunekit.methods.evo.library import ShapeLibrary, ShapeLoader
from prunekit.methods.evo.refine import RefineSettings
from prunekit.models.adapter import ModelAdapter
from prunekit.solvers.distill import normalised_error

from tests.helpers.models import plain_model
from tests.helpers.shapes import saved_and_masked

HELD_OUT = RefineSettings(steps=20, windows=6, lr=1e-3)     # 12 windows: 6 to learn from, 6 held out
ON_TRAINING = RefineSettings(steps=12, windows=4, lr=3e-3)  # 4 windows: judged on the training ones


def _ids(n, length=32):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(0))


def _library(model, ids, folder, refine):
    return ShapeLibrary.open_or_build(ModelAdapter(model), ids, [32, 64], [1], 0.01, folder, progress=False,
                                      refine=refine)[0]


def _block_io(model, ids, index):
    """Block `index`'s input, keyword arguments and output in the dense model's own forward."""
    seen = {}

    def pre(module, args, kwargs):
        seen["x"], seen["kwargs"] = args[0].detach().clone(), dict(kwargs)

    def post(module, args, kwargs, out):
        seen["y"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
    block = ModelAdapter(model).layers[index]
    handles = [block.register_forward_pre_hook(pre, with_kwargs=True),
               block.register_forward_hook(post, with_kwargs=True)]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return seen


def _error(model, lib, index, level, io) -> float:
    """The normalised output error of the library's variant `level` of block `index`."""
    work = copy.deepcopy(model)
    block = ModelAdapter(work).layers[index]
    ShapeLoader(lib, ModelAdapter(work))(index, level, block)
    with torch.no_grad():
        return float(normalised_error(block(io["x"], **io["kwargs"]), io["y"]))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("n, settings", [(12, HELD_OUT), (4, ON_TRAINING)], ids=["held-out", "on-training"])
def test_recorded_errors_are_the_stored_variants_and_never_worse_than_the_closed_form(tmp_path, family, n, settings):
    model = plain_model(family)
    ids = _ids(n)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    plain = _library(model, ids, tmp_path / "plain", None)
    refined = _library(model, ids, tmp_path / "refined", settings)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in dense.items())     # left dense
    assert plain.root != refined.root and refined.meta["refine"]["steps"] == settings.steps
    held_out = n > settings.windows
    assert refined.meta["refine"]["held_out"] == held_out
    errors = refined.meta["refined"]
    assert len(errors) == 3 * 3          # 3 blocks x (1 KV-head count + 2 widths)
    levels = {"kv.1": (1, 3), "mlp.32": (2, 1), "mlp.64": (2, 2)}
    kept = {"kv": 0, "mlp": 0}
    for i in range(3):
        io = _block_io(model, ids[settings.windows:] if held_out else ids, i)
        for name, level in levels.items():
            before, after = errors[f"{i}.{name}"]
            assert before == pytest.approx(_error(model, plain, i, level, io), rel=1e-4)
            assert after == pytest.approx(_error(model, refined, i, level, io), rel=1e-4)
            assert after <= before
            kept[name[:name.index(".")]] += after < before
    assert kept["kv"] == 3                          # merged K/V heads always gain here
    assert held_out or kept["mlp"] >= 2             # the MLPs' closed forms are least-squares fits on every window


def test_a_refined_candidate_computes_what_its_saved_decilm_model_computes(tmp_path):
    model = plain_model("qwen2")
    ids = _ids(4)
    lib = _library(model, ids, tmp_path, ON_TRAINING)
    genome = ((0, 3), (1, 1), (1, 1))
    assert all(f"in{j}" in lib.variant(i, (1, 1)) for i in (1, 2) for j in (0, 1))   # refined MLPs too
    small, saved, masked = saved_and_masked(model, lib, genome, ids)
    assert torch.allclose(saved, masked, atol=1e-5)
    q = ModelAdapter(model).layers[1].self_attn.q_proj.weight
    assert not torch.equal(small.model.layers[1].self_attn.q_proj.weight, q)      # q was trained


def test_the_config_reaches_the_library_and_the_report(tmp_path):
    cfg = EvoShapeConfig(keep=0.6, mlp_widths="0.5", width_multiple=8, stages="32:2,64:1", generations=1,
                         offspring=2, library_dir=str(tmp_path / "lib"), refine_steps=4, refine_windows=2,
                         refine_lr=1e-3)
    res = prune(plain_model("llama"), cfg, _ids(6), progress=False)
    refined = res.details["library"]["refined"]
    assert refined["steps"] == 4 and refined["windows"] == 2 and refined["variants"] == 3 * 2
    assert refined["mean_after"] <= refined["mean_before"]


def test_a_frozen_model_is_refined_alike_and_stays_frozen(tmp_path):
    """Parameters without requires_grad (a frozen model from the Python API) train the same way and
    keep their flags."""
    model, frozen = plain_model("llama"), plain_model("llama")
    frozen.requires_grad_(False)
    ids = _ids(4)
    a = _library(model, ids, tmp_path / "a", ON_TRAINING)
    b = _library(frozen, ids, tmp_path / "b", ON_TRAINING)
    assert a.meta["refined"] == b.meta["refined"]
    assert not any(p.requires_grad for p in frozen.parameters()) and all(p.requires_grad for p in model.parameters())
